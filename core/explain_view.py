"""What the Explainability page shows, as plain values: its options and defaults, its labels and its texts.

No streamlit here: the page reads widgets, calls `core.explain` for SHAP, permutation importance and
LIME, calls these for what surrounds them, and draws. Model ids are user text (built from typed
tickers): texts that the page renders as markdown escape them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from core.config import get_settings
from core.market import load_prices
from core.text import escape_markdown

WARM_UP_DAYS = 60  # a date range never starts in the first 60 trading days of a ticker's history
SHAP_CAPTION = ("SHAP values say how far each feature moved a prediction from the model's average output "
                "(the base value), in next-day log return: base value + contributions = prediction, exactly (TreeSHAP).")
NAIVE_NOTE = ("This is the naive baseline (tomorrow's close = today's): it uses no features, so there is nothing "
              "to explain.")
UNITS = ["log return (exact)", "$ (order-dependent)"]
PRICE_STEPS_NOTE = ("In $, each step is last close × (e^cumulative − e^previous), applied in order of |SHAP|: "
                    "the steps add up to the predicted close exactly, but a step's size depends on that order.")
LIME_SPINNER = "LIME: fitting a local linear surrogate on 2,000 perturbed samples…"
AUTO_COLOUR = "auto: "


def trading_days(symbol: str) -> pd.DatetimeIndex:
    return load_prices(symbol).index


def symbol_options(models: Sequence[Mapping], ticker: str, model_id: str) -> tuple[list[str], int]:
    """The tickers with a model and the one to open on: a deep link's model's, else its ticker, else the first."""
    symbols = sorted({m["symbol"] for m in models})
    linked = next((m["symbol"] for m in models if m["model_id"] == model_id), ticker)
    return symbols, symbols.index(linked) if linked in symbols else 0


def model_options(candidates: Mapping[str, Mapping], linked: str) -> tuple[list[str], int]:
    """A ticker's model ids and the one to open on: a deep link's, else the deployed one, else the newest."""
    ids = list(candidates)
    deployed = next((i for i, m in candidates.items() if m["status"] == "deployed"), ids[0])
    return ids, ids.index(linked if linked in ids else deployed)


def model_labels(candidates: Mapping[str, Mapping]) -> dict[str, str]:
    return {i: f"{i} ({m['status']})" for i, m in candidates.items()}


def range_bounds(days: pd.DatetimeIndex) -> dict:
    """The date range picker's value, min_value and max_value: the last `explain_window_days`, after the warm-up."""
    default_start = days[max(WARM_UP_DAYS, len(days) - get_settings().explain_window_days)]
    return dict(value=(default_start.date(), days[-1].date()), min_value=days[min(WARM_UP_DAYS, len(days) - 1)].date(),
                max_value=days[-1].date())


def shap_progress(model_id: str, start: str, end: str) -> str:
    return f"Computing SHAP values for {model_id}, {start} to {end}…"


def permutation_progress(repeats: int, n_rows: int) -> str:
    return f"Permutation importance: each feature shuffled {repeats} times on {n_rows:,} days…"


def window_caption(model_id: str, n_days: int, start: str, end: str) -> str:
    return f"SHAP values of {escape_markdown(model_id)}: {n_days:,} trading days, {start} to {end}."


def day_cards(summary: Mapping) -> list[dict]:
    """The Local tab's metric cards (st.metric keyword arguments) from `explain.day_summary`."""
    actual = "not known yet" if summary["actual_close"] is None else f"${summary['actual_close']:.2f}"
    return [dict(label="Base value", value=f"${summary['base_close']:.2f}",
                 delta=f"{summary['base_return']:+.3%} log return", delta_color="off", delta_arrow="off"),
            dict(label="Prediction (next close)", value=f"${summary['predicted_close']:.2f}",
                 delta=f"{summary['predicted_return']:+.3%}"),
            dict(label="Actual", value=actual,
                 delta=None if summary["actual_return"] is None else f"{summary['actual_return']:+.3%}")]


def waterfall_units(units_choice: str) -> str:
    """The waterfall's units for a choice of `UNITS`: "price" or "return"."""
    return "price" if units_choice.startswith("$") else "return"


def waterfall_args(summary: Mapping, units: str) -> tuple[float, float, str, str]:
    """(base, prediction, units, title) of the waterfall chart in `units` ("price" or "return")."""
    in_price = units == "price"
    return (summary["base_close"] if in_price else summary["base_return"],
            summary["predicted_close"] if in_price else summary["predicted_return"], units,
            f"From base value to prediction, close of {summary['day']:%Y-%m-%d} ${summary['last_close']:.2f}")


def lime_caption(lime: Mapping) -> str:
    return (f"LIME's local model predicts {lime['local_prediction']:+.3e} vs the model's {lime['model_prediction']:+.3e} "
            f"(R² of the surrogate {lime['score']:.2f}). LIME samples, so its weights are approximate; SHAP is exact.")


def colour_options(ranked: Sequence[str], feature: str, partner: str) -> list[str]:
    """What the dependence plot can colour by: the automatic partner first, then every other feature."""
    return [f"{AUTO_COLOUR}{partner}", *[f for f in ranked if f != feature]]


def colour_feature(choice: str, partner: str) -> str:
    return partner if choice.startswith(AUTO_COLOUR) else choice


def compare_options(candidates: Mapping[str, Mapping], model_id: str) -> tuple[list[str], int]:
    """The models `model_id` can be compared with (same ticker, with features) and the one to open on: its parent."""
    others = [i for i, m in candidates.items() if i != model_id and m["model_type"] != "naive"]
    parent = candidates[model_id].get("parent_id")
    return others, others.index(parent) if parent in others else 0


def compare_columns(other: str, model_id: str) -> dict[str, dict]:
    """The comparison table's number columns (column name -> NumberColumn keyword arguments)."""
    return {other: dict(format="%.2e"), model_id: dict(format="%.2e"),
            "rank change": dict(help="positive: the feature climbed in the ranking")}
