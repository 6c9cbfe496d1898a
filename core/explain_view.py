"""What the Explainability page shows, as plain values: its options and defaults, its labels and its texts.

No streamlit here: the page reads widgets, calls `core.explain` / `core.explain_local` for SHAP,
permutation importance and LIME, calls these for what surrounds them, and draws. Two kinds of model
are explained: price models (log return, $) and direction models (log-odds, P(up)); `KINDS` holds the
words and units of each. Model ids are user text (built from typed tickers): texts that the page
renders as markdown escape them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from core.config import get_settings
from core.explain import DIRECTION, ExplainError, Explanation
from core.market import MarketDataError, load_prices
from core.registry import ModelIntegrityError, RegistryError
from core.text import escape_markdown

ERRORS = (ExplainError, MarketDataError, RegistryError, ModelIntegrityError)  # faults the page shows in words
WARM_UP_DAYS = 60  # a date range never starts in the first 60 trading days of a ticker's history
SHAP_CAPTION = ("SHAP values say how far each feature moved a prediction from the model's average output "
                "(the base value), in next-day log return: base value + contributions = prediction, exactly (TreeSHAP).")
DIRECTION_CAPTION = (
    "A direction model gives P(up), the probability that the next close is above today's. SHAP works in log-odds, "
    "log(P / (1 − P)): 0 is a coin flip (50 %), +0.1 is about 52.5 %, and contributions add up exactly in log-odds, "
    "not in %. The values explain the calibrated model's underlying classifiers (the mean log-odds of its members "
    "before calibration, the raw P(up)); calibration then maps the raw P(up) to the one Forecast shows.")
KINDS = {  # words and units per kind of model: price (log return) or direction (log-odds)
    "price": dict(caption=SHAP_CAPTION, shap_units="next-day log return", bar_units="mean |SHAP| (log return)",
                  compare_units="log return", units=["log return (exact)", "$ (order-dependent)"],
                  permutation_axis="rise in MAE (log return) when the feature is shuffled", lime_axis="LIME weight (log return)"),
    "direction": dict(caption=DIRECTION_CAPTION, shap_units="log-odds of up", bar_units="mean |SHAP| (log-odds)",
                      compare_units="log-odds", units=["log-odds (exact)", "probability (order-dependent)"],
                      permutation_axis="rise in log loss of the calibrated P(up) when the feature is shuffled",
                      lime_axis="LIME weight (probability of the predicted class)"),
}
NAIVE_NOTE = ("This is the naive baseline (tomorrow's close = today's): it uses no features, so there is nothing "
              "to explain.")
UNITS = KINDS["price"]["units"]
PRICE_STEPS_NOTE = ("In $, each step is last close × (e^cumulative − e^previous), applied in order of |SHAP|: "
                    "the steps add up to the predicted close exactly, but a step's size depends on that order.")
PROBABILITY_STEPS_NOTE = ("In probability, each step is sigmoid(cumulative log-odds) − sigmoid(previous), applied in order "
                          "of |SHAP|: the steps add up exactly to the raw P(up), but a step's size depends on that order.")
STORED_NOTE = ("Opened on the window explained when the model was registered (stored beside the model, nothing "
               "recomputed); pick another date range to compute SHAP values for it.")
MISSING_NOTE = ("This model's explained window was not stored at registration (an older model, or its artifacts "
                "failed): SHAP values are computed only when asked.")
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
    """A ticker's model ids and the one to open on: a deep link's, else the deployed price model (the one Home
    shows), else a deployed direction model, else the newest."""
    ids = list(candidates)
    ranked = sorted(ids, key=lambda i: (candidates[i]["status"] != "deployed", candidates[i]["model_type"] == DIRECTION))
    deployed = ranked[0] if candidates[ranked[0]]["status"] == "deployed" else ids[0]
    return ids, ids.index(linked if linked in ids else deployed)


def model_labels(candidates: Mapping[str, Mapping]) -> dict[str, str]:
    return {i: f"{i} ({m['status']})" for i, m in candidates.items()}


def kind(model: Mapping) -> str:
    return "direction" if model["model_type"] == DIRECTION else "price"


def range_bounds(days: pd.DatetimeIndex, stored: Explanation | None = None) -> dict:
    """The date range picker's value, min_value and max_value: the stored window if any, else the last
    `explain_window_days`, after the warm-up."""
    default_start = days[max(WARM_UP_DAYS, len(days) - get_settings().explain_window_days)]
    value = (default_start.date(), days[-1].date()) if stored is None else stored_range(stored)
    return dict(value=value, min_value=days[min(WARM_UP_DAYS, len(days) - 1)].date(), max_value=days[-1].date())


def stored_range(stored: Explanation) -> tuple:
    return stored.frame.index[0].date(), stored.frame.index[-1].date()


def stored_permutation(document: Mapping | None) -> tuple[pd.DataFrame | None, str | None]:
    """(permutation importance from the stored importance document, feature-indexed, None), or (None, why not)."""
    if not document:
        return None, "not stored for this model (its importance file is missing or was written for another artifact)."
    table = pd.DataFrame(document["features"])
    return table.set_index("feature")[["permutation_mean", "permutation_std"]], None


def shap_progress(model_id: str, start: str, end: str) -> str:
    return f"Computing SHAP values for {model_id}, {start} to {end}…"


def window_caption(model_id: str, n_days: int, start: str, end: str, stored: bool = False,
                   train_end: str | None = None) -> str:
    """What the explained window is, and whether the model was trained on it: importance on the training days
    says how the model fits them, not how it reasons on days it has not seen."""
    sample = ""
    if train_end and start <= train_end:
        where = "inside" if end <= train_end else "partly inside"
        sample = (f" In-sample: these days are {where} its training window (to {train_end}); pick days after it to "
                  "see how it reasons on data it has not seen.")
    return (f"SHAP values of {escape_markdown(model_id)}: {n_days:,} trading days, {start} to {end}."
            + (f" {STORED_NOTE}" if stored else "") + sample)


def day_cards(summary: Mapping) -> list[dict]:
    """The Local tab's metric cards (st.metric keyword arguments) from `explain_local.day_summary`."""
    if "raw_p" in summary:
        actual = "not known yet" if summary["actual_up"] is None else ("up" if summary["actual_up"] else "down")
        calibrated = "n/a" if summary["p_up"] is None else f"{summary['p_up']:.1%}"
        return [dict(label="Base P(up)", value=f"{summary['base_p']:.1%}",
                     delta=f"{summary['base_log_odds']:+.3f} log-odds", delta_color="off", delta_arrow="off"),
                dict(label="Raw P(up) (explained)", value=f"{summary['raw_p']:.1%}",
                     delta=f"{summary['log_odds']:+.3f} log-odds", delta_color="off", delta_arrow="off"),
                dict(label="Calibrated P(up) (served)", value=calibrated),
                dict(label="Actual", value=actual,
                     delta=None if summary["actual_return"] is None else f"{summary['actual_return']:+.3%}")]
    actual = "not known yet" if summary["actual_close"] is None else f"${summary['actual_close']:.2f}"
    return [dict(label="Base value", value=f"${summary['base_close']:.2f}",
                 delta=f"{summary['base_return']:+.3%} log return", delta_color="off", delta_arrow="off"),
            dict(label="Prediction (next close)", value=f"${summary['predicted_close']:.2f}",
                 delta=f"{summary['predicted_return']:+.3%}"),
            dict(label="Actual", value=actual,
                 delta=None if summary["actual_return"] is None else f"{summary['actual_return']:+.3%}")]


def waterfall_units(units_choice: str) -> str:
    """The waterfall's units for a choice of a kind's units: "return", "price", "log-odds" or "probability"."""
    return {"$": "price", "log-odds": "log-odds", "probability": "probability"}.get(units_choice.split(" ")[0], "return")


def steps_note(units: str) -> str | None:
    return {"price": PRICE_STEPS_NOTE, "probability": PROBABILITY_STEPS_NOTE}.get(units)


def waterfall_args(summary: Mapping, units: str) -> tuple[float, float, str, str]:
    """(base, prediction, units, title) of the waterfall chart in `units`."""
    title = (f"From base P(up) to the raw P(up) of the day after {summary['day']:%Y-%m-%d} (close ${summary['last_close']:.2f})"
             if "raw_p" in summary else
             f"From base value to prediction, close of {summary['day']:%Y-%m-%d} ${summary['last_close']:.2f}")
    pairs = {"price": ("base_close", "predicted_close"), "return": ("base_return", "predicted_return"),
             "log-odds": ("base_log_odds", "log_odds"), "probability": ("base_p", "raw_p")}
    base, prediction = pairs[units]
    return summary[base], summary[prediction], units, title


def lime_caption(lime: Mapping) -> str:
    if lime.get("label"):
        return (f"LIME (classification) explains the predicted class, **{lime['label']}**: its local model gives "
                f"{lime['local_prediction']:.1%} vs the model's {lime['model_prediction']:.1%} for that class (calibrated "
                f"predict_proba; R² of the surrogate {lime['score']:.2f}). LIME samples, so its weights are approximate; "
                "SHAP is exact.")
    return (f"LIME's local model predicts {lime['local_prediction']:+.3e} vs the model's {lime['model_prediction']:+.3e} "
            f"(R² of the surrogate {lime['score']:.2f}). LIME samples, so its weights are approximate; SHAP is exact.")


def colour_options(ranked: Sequence[str], feature: str, partner: str) -> list[str]:
    """What the dependence plot can colour by: the automatic partner first, then every other feature."""
    return [f"{AUTO_COLOUR}{partner}", *[f for f in ranked if f != feature]]


def colour_feature(choice: str, partner: str) -> str:
    return partner if choice.startswith(AUTO_COLOUR) else choice


def compare_options(candidates: Mapping[str, Mapping], model_id: str) -> tuple[list[str], int]:
    """The models `model_id` can be compared with (same ticker and kind, with features) and the one to open on: its parent."""
    same = kind(candidates[model_id])
    others = [i for i, m in candidates.items() if i != model_id and m["model_type"] != "naive" and kind(m) == same]
    parent = candidates[model_id].get("parent_id")
    return others, others.index(parent) if parent in others else 0


def compared(other: Explanation | None, other_id: str) -> Explanation:
    """The other model's explanation, or a clear error when it has no stored window to compare with."""
    if other is None:
        raise ExplainError(f"{other_id} has no stored explained window: pick a date range to compare on it.")
    return other


def compare_caption(stored: bool, units: str) -> str:
    return ("Mean |SHAP| (" + units + ") of each model over its own registered window (stored, nothing recomputed)."
            if stored else f"Mean |SHAP| ({units}) of both models over the selected date range.")


def compare_columns(other: str, model_id: str) -> dict[str, dict]:
    """The comparison table's number columns (column name -> NumberColumn keyword arguments)."""
    return {other: dict(format="%.2e"), model_id: dict(format="%.2e"),
            "rank change": dict(help="positive: the feature climbed in the ranking")}
