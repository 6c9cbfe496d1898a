"""How numbers read on a page: p-values, percentages, money and signed changes, never "nan" or "Infinity".

Pages show statistics that are legitimately undefined early on (a p-value before the minimum
sample, an improvement over a zero baseline, a confidence bound that is still infinite). Rendered
raw they read "+nan%" or "±Infinity"; here every such value reads `NOT_ENOUGH` instead. Tiny
p-values keep their magnitude in scientific notation (1.2e-14, never 0.000). No imports from core:
this module sits at the bottom of the layers, next to `core.text`.

>>> p_value(7e-14), p_value(0.0312), p_value(float("nan"))
('7.0e-14', '0.031', 'not enough data')
>>> signed_pct(float("nan")), signed_pct(-3.25), money(float("inf"))
('not enough data', '-3.2%', 'not enough data')
"""
from __future__ import annotations

import math

NOT_ENOUGH = "not enough data"

# how error metrics read in a table: column name -> printf-style format, for the pages' column configs
ERROR_METRIC_FORMATS = {"MAE $": "$%.3f", "RMSE $": "$%.3f", "MAPE %": "%.2f%%", "direction %": "%.1f%%"}


def finite(value) -> bool:
    """True for a real, finite number (None, NaN, ±inf and non-numbers are not)."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def p_value(value, digits: int = 3) -> str:
    """A p-value: scientific notation below 0.001 (magnitude kept), else `digits` decimals."""
    if not finite(value):
        return NOT_ENOUGH
    value = float(value)
    return f"{value:.1e}" if 0 < value < 10 ** -digits else f"{value:.{digits}f}"


def number(value, spec: str = ".3f") -> str:
    """`value` in the format `spec`, or NOT_ENOUGH when it is not a finite number."""
    return format(float(value), spec) if finite(value) else NOT_ENOUGH


def signed_pct(value, decimals: int = 1) -> str:
    """A percentage already in percent units, with its sign: "+3.2%"."""
    return f"{float(value):+.{decimals}f}%" if finite(value) else NOT_ENOUGH


def money(value, decimals: int = 3) -> str:
    return f"${float(value):,.{decimals}f}" if finite(value) else NOT_ENOUGH


def interval(low, high, spec: str = "+.3f") -> str:
    """A confidence interval "[low, high]"; NOT_ENOUGH while either end is still unbounded."""
    return f"[{format(float(low), spec)}, {format(float(high), spec)}]" if finite(low) and finite(high) else NOT_ENOUGH
