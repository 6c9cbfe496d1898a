"""Numbers a reader sees (core.formatting), the exchange calendar, and the drift verdict's reasons."""
import doctest
import math

import pandas as pd
import pytest

from core import drift_view, formatting, trading_calendar


@pytest.mark.parametrize("module", [formatting, trading_calendar, drift_view])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


def test_numbers_never_read_nan_or_infinity():
    for value in (None, math.nan, math.inf, -math.inf, "x"):
        assert formatting.p_value(value) == formatting.signed_pct(value) == formatting.money(value) == "not enough data"
    assert formatting.interval(-math.inf, math.inf) == "not enough data"
    assert formatting.p_value(7e-14) == "7.0e-14" and formatting.p_value(0.5) == "0.500"


def test_no_forecast_for_a_market_holiday():
    from core.market import next_trading_day

    assert next_trading_day("^GSPC", pd.Timestamp("2018-12-31")) == pd.Timestamp("2019-01-02")  # the data ends there
    assert not trading_calendar.is_session("2012-12-25") and not trading_calendar.is_session("2012-04-06")  # Good Friday
    assert trading_calendar.is_session("2012-10-08")  # Columbus Day: a federal holiday, the exchange trades


def test_the_why_column_names_the_test_that_held_the_verdict_back():
    row = {"verdict": "none", "psi": 7.2, "p_value": 1e-24, "psi_p_value": 0.31, "note": "", "out_of_range": 0.0}
    why = drift_view.feature_reason(row, 20)
    assert "PSI 7.20 ≥ 0.25 ✓" in why and "KS p 1.0e-24" in why and "PSI p 0.310 ≥ 0.05 ✗" in why
    value, label = drift_view.prediction_label({"psi": 4.8, "p_value": 1e-9, "psi_p_value": 0.4, "drift": False})
    assert value == "4.80" and label.startswith("no drift") and "PSI p 0.400" in label


def test_strict_json_writes_null_for_undefined_numbers():
    import json

    import numpy as np

    from core.text import to_strict_json

    text = to_strict_json({"auc": float("nan"), "gain": np.float64(np.inf), "folds": [np.float32(0.5), -np.inf],
                           "n": np.int64(3)})
    assert json.loads(text) == {"auc": None, "gain": None, "folds": [0.5, None], "n": 3}
    assert "NaN" not in text and "Infinity" not in text
