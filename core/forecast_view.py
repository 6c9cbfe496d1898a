"""What the Forecast page shows, as plain values: its defaults, its messages and its metric cards.

No streamlit here: the page reads widgets, calls these and draws. Texts that quote user input (a
typed ticker, a model id built from one) are escaped with `escape_markdown` where the page renders
them as markdown.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta

import pandas as pd

from core import direction
from core.market import MarketDataError, load_prices, source_label
from core.metrics import LIVE_SKILL_DAYS, SKILL_CONFIDENCE, live_skill_of
from core.model_view import validation_evidence
from core.runbook import runbook_caption
from core.text import escape_markdown
from core.training import DEFAULT_PARAMS, MODEL_LABELS, MODEL_TYPES, Progress, TrainedModel, train_model

CHART_DAYS = 180  # the chart range opens on the last 180 days
LIVE_DAYS = LIVE_SKILL_DAYS  # live performance: core.metrics' one definition (Home, Monitoring, alerts too)

XGB_LEARNING_RATES = [0.01, 0.02, 0.03, 0.05, 0.1, 0.2]
SERVE_HELP = ("Serve the forecast for the latest data day through the serving path and log it once; "
              "A/B tests, live metrics and alerts count it.")


def param_widgets(model_type: str) -> list[tuple[str, str, dict]]:
    """The training settings of `model_type` as (parameter, widget name, widget keyword arguments).

    Each opens on `DEFAULT_PARAMS`; the naive baseline has none.
    """
    rf, xgb = DEFAULT_PARAMS["rf"], DEFAULT_PARAMS["xgb"]
    widgets = {
        "rf": [("n_estimators", "slider", dict(label="Trees", min_value=50, max_value=500, value=rf["n_estimators"],
                                                step=50, key="fc_rf_trees")),
               ("max_depth", "slider", dict(label="Max depth", min_value=2, max_value=12, value=rf["max_depth"],
                                             key="fc_rf_depth")),
               ("min_samples_leaf", "slider", dict(label="Min samples per leaf", min_value=1, max_value=100,
                                                    value=rf["min_samples_leaf"], key="fc_rf_leaf"))],
        "xgb": [("n_estimators", "slider", dict(label="Boosting rounds", min_value=50, max_value=1000,
                                                 value=xgb["n_estimators"], step=50, key="fc_xgb_trees")),
                ("max_depth", "slider", dict(label="Max depth", min_value=2, max_value=10, value=xgb["max_depth"],
                                              key="fc_xgb_depth")),
                ("learning_rate", "select_slider", dict(label="Learning rate", options=XGB_LEARNING_RATES,
                                                        value=xgb["learning_rate"], key="fc_xgb_lr"))],
    }
    widgets["direction"] = [
        ("estimator", "selectbox", dict(label="Classifier", options=list(direction.ESTIMATORS),
                                        format_func=direction.ESTIMATOR_LABELS.get, key="fc_dir_estimator")),
        ("n_estimators", "slider", dict(label="Boosting rounds (XGBoost)", min_value=20, max_value=400, step=10,
                                         value=direction.DEFAULT_PARAMS["xgb"]["n_estimators"], key="fc_dir_trees"))]
    return widgets.get(model_type, [])


TRAINABLE_TYPES = [*MODEL_TYPES, direction.DIRECTION]  # the Forecast form's "Model type" options
TYPE_LABELS = {**MODEL_LABELS, direction.DIRECTION: "Direction (up / down classifier)"}
FORM_NOTES = {"naive": "The naive baseline has no settings: tomorrow's close = today's.",
              direction.DIRECTION: "Will the next close be above today's? The depth and learning rate (or C) are "
                                   "grid-searched by log loss and the probabilities calibrated on walk-forward folds, "
                                   "never shuffled; logistic regression and both baselines are scored on the same days."}


def form_note(model_type: str) -> str | None:
    """The caption under the training form's settings, for the types that need one."""
    return FORM_NOTES.get(model_type)


def train(symbol: str, model_type: str, as_of, window_days: int, params: dict, progress: Progress) -> TrainedModel:
    """Train a price model or a direction model (whose `estimator` setting picks the classifier)."""
    if model_type == direction.DIRECTION:
        params = dict(params)
        estimator = params.pop("estimator", "xgb")
        params = params if estimator == "xgb" else {}  # logistic regression has no boosting rounds
        return direction.train_direction(symbol, estimator, train_end=as_of, window_days=window_days, params=params,
                                         progress=progress)
    return train_model(symbol, model_type, train_end=as_of, window_days=window_days, params=params, progress=progress)


def symbol_index(symbols: Sequence[str], linked: str) -> int:
    """The ticker the selectbox opens on: a deep link's, else AAPL, else the first."""
    if linked in symbols:
        return symbols.index(linked)
    return symbols.index("AAPL") if "AAPL" in symbols else 0


def source_caption(source: str, prices: pd.DataFrame) -> str:
    """Where the prices came from; when it was not yfinance, where the runbook says why (offline, unreachable)."""
    caption = (f"Data source: **{source_label(source)}** · {len(prices):,} trading days, "
               f"{prices.index[0]:%Y-%m-%d} → {prices.index[-1]:%Y-%m-%d}")
    if "yfinance" in source:
        return caption
    return caption + "  \n" + runbook_caption("troubleshooting", "Expected yfinance? Why it was not used and what to check")


def refresh_prices(symbol: str) -> str:
    """Ask the data source again for `symbol`; say what answered (or why the refresh failed)."""
    try:
        fresh = load_prices(symbol, refresh=True)
    except MarketDataError as exc:
        return f"Refresh failed: {exc}"
    return f"{symbol} reloaded from {source_label(fresh.attrs['source'])}."


def default_range(first: date, last: date) -> tuple[date, date]:
    return max(first, last - timedelta(days=CHART_DAYS)), last


def forecast_banner(forecast: Mapping) -> str:
    """Whether the forecast shown was served and logged, or is a what-if computed for this view."""
    if forecast.get("prediction_id") is not None:
        logged_at = forecast["logged_at"][:16].replace("T", " ")
        return (f"**Logged forecast**: served for {forecast['as_of']} and logged on {logged_at} UTC. "
                "Viewing it again does not log it again.")
    return (f"**What-if for {forecast['as_of']}: not served, not logged.** No forecast was served for this day; "
            "this one is computed now by the model that would serve it.")


def forecast_cards(forecast: Mapping, served: Mapping) -> list[dict]:
    """The four metric cards (st.metric keyword arguments): last close, forecast, interval, latency.

    `served` is the serving model's metrics: the interval is the one of the model that served it.
    """
    change = forecast["predicted_close"] / forecast["last_close"] - 1
    money = "${:,.0f}" if forecast["predicted_close"] >= 1000 else "${:,.2f}"
    cards = [dict(label=f"Close on {forecast['as_of']}", value=f"${forecast['last_close']:,.2f}"),
             dict(label=f"Forecast for {forecast['target_date']}", value=f"${forecast['predicted_close']:,.2f}",
                  delta=f"{change:+.2%}")]
    if forecast["lower"] is not None and forecast["upper"] is not None:
        cards.append(dict(label=f"{served['interval_coverage_nominal']:.0%} interval",
                          value=f"{money.format(forecast['lower'])}–{money.format(forecast['upper'])}",
                          delta=f"{served['interval_coverage_empirical']:.0%} covered on validation",
                          delta_color="off", delta_arrow="off"))
    else:  # a prediction recorded from outside the app carries no interval
        cards.append(dict(label="Interval", value="not logged"))
    latency = f"{forecast['latency_ms']:.1f} ms" if forecast["latency_ms"] is not None else "n/a"
    cards.append(dict(label="Serving latency", value=latency))
    return cards


def served_caption(forecast: Mapping, deployed: Mapping | None) -> str:
    """Which model served (or computed) the forecast, its A/B arm if any, and the deployed model."""
    is_logged = forecast.get("prediction_id") is not None
    arm = f" (arm {forecast['arm']} of A/B test #{forecast['experiment_id']})" if forecast.get("experiment_id") else ""
    deployed_text = f"; deployed model: {escape_markdown(deployed['model_id'])}" if deployed else ""
    return f"{'Served' if is_logged else 'Computed'} by **{escape_markdown(forecast['model_id'])}**{arm}{deployed_text}."


def in_sample_warning(forecast: Mapping, train_end: str) -> str:
    is_logged = forecast.get("prediction_id") is not None
    return (f"{forecast['as_of']} is inside the training window of {escape_markdown(forecast['model_id'])} (trained "
            f"up to {train_end}): this forecast is in-sample, says nothing about live accuracy, and "
            + ("was logged before such forecasts were refused." if is_logged else "was not logged."))


def past_day_caption(today: pd.Timestamp) -> str:
    return (f"Only the latest data day ({today:%Y-%m-%d}) can be served. A past day shows the forecast logged for it, "
            "or this what-if when none was served.")


def chart_forecast(forecast: Mapping | None) -> dict | None:
    """The forecast as the chart draws it: a missing interval collapses onto the predicted close."""
    if not forecast:
        return forecast
    point = forecast["predicted_close"]
    return {**forecast, "lower": forecast["lower"] if forecast["lower"] is not None else point,
            "upper": forecast["upper"] if forecast["upper"] is not None else point}


def skill_verdict(model: Mapping, as_of=None) -> tuple[str, str]:
    """("warning" | "success" | "info", text): how the deployed model fares against naive, live (the live skill
    of `core.metrics`, the number Home and Monitoring show) or, before it has been scored, on validation.

    Green only for a certified model that credibly beats naive; "on par" when the evidence does not say.
    """
    live = live_skill_of(model["model_id"], as_of)
    certified = "" if model["certified"] else " It is not certified (Model Management runs the five checks)."
    name = escape_markdown(model["model_id"])
    if live["days"] == 0:
        words, _ = validation_evidence(model["metrics"])
        return ("warning" if model["metrics"]["skill"] <= 0 else "info"), (
            f"{name} has no live history yet (it has not served a scored forecast). On validation its skill is "
            f"{model['metrics']['skill']:+.3f} ({words}). For daily stock returns a skill near 0 is common: treat its "
            f"forecast with that in mind.{certified}")
    where = f"over its last {live['days']} scored days live (skill {live['skill']:+.3f})"
    gain = (f"the daily gain over naive is \\${live['gain_low']:+.3f} to \\${live['gain_high']:+.3f} "
            f"({SKILL_CONFIDENCE:.0%} interval)")
    verdict = live["verdict"]
    if verdict == "beats naive":
        return ("success" if model["certified"] else "warning"), f"{name} beats the naive forecast {where}: {gain}.{certified}"
    if verdict == "worse than naive":
        return "warning", (f"{name} is worse than the naive forecast {where}: {gain}. Treat its forecast with that "
                           f"in mind.{certified}")
    if verdict == "on par with naive":
        return "info", (f"{name} is on par with the naive forecast {where}: {gain}, which includes 0, so the "
                        f"difference could be luck. For daily stock returns this is common.{certified}")
    return "info", f"{name} has {live['days']} scored days live (skill {live['skill']:+.3f}): too few to judge.{certified}"


def trained_summary(new_id: str, metrics: Mapping) -> tuple:
    """What the page keeps about a model it just trained (the session state holds plain values)."""
    if metrics.get("kind") == direction.DIRECTION:
        return new_id, metrics["accuracy"], metrics["baselines"][metrics["best_baseline"]]["accuracy"], metrics["skill"]
    return new_id, metrics["mae"], metrics["naive"]["mae"], metrics["skill"]


def trained_message(new_id: str, mae: float, naive_mae: float, skill_value: float) -> str:
    # point estimates on the walk-forward days: whether a gap is more than chance is certification's question
    if new_id.startswith(f"{direction.DIRECTION}_"):  # (id, accuracy, the better baseline's accuracy, Brier skill)
        side = "lower" if skill_value > 0 else "not lower"
        return (f"Registered **{escape_markdown(new_id)}** as a candidate: validation accuracy {mae:.1%} vs "
                f"{naive_mae:.1%} for the better baseline by Brier score (Brier skill {skill_value:+.4f}: its Brier "
                f"is {side} than that baseline's). Its P(up) is shown above. Certify it on Model Management to see "
                "whether the gap is more than chance, then deploy.")
    side = "lower" if skill_value > 0 else "not lower"
    # \$: two dollar signs in one markdown string would render the text between them as LaTeX
    return (f"Registered **{escape_markdown(new_id)}** as a candidate: validation MAE \\${mae:.3f} vs naive "
            f"\\${naive_mae:.3f} (skill {skill_value:+.3f}: its error is {side} than naive's on these days). Certify "
            "it on Model Management to see whether the gap is more than chance, then deploy.")


def model_management_link(model_id: str) -> dict:
    """The link under a freshly trained model (keyword arguments of `st.page_link`): Model Management opened on it."""
    return dict(page="pages/2_Model_Management.py", label=f"Open Model Management on {model_id}", icon="🗂️",
                query_params={"model": model_id})


def prices_with_source(symbol: str) -> tuple[pd.DataFrame, str]:
    """The ticker's prices and where they came from (the page caches this pair)."""
    frame = load_prices(symbol)
    return frame, frame.attrs.get("source", "")


def training_progress(report: Callable[..., object]) -> Callable[[float, str], object]:
    """A training progress callback for `report(fraction, text=...)`: training fills 0-75 %, registering the rest."""
    return lambda fraction, text: report(0.75 * min(fraction, 1.0), text=text if fraction < 1 else "Trained")
