"""What the Forecast page shows about direction models: P(up) with its interval of belief, the comparison with
the baselines in numbers and in words, the reliability diagram and the confusion matrix (no streamlit).

The model shown is the ticker's deployed direction model, else its newest. A day it served shows the logged
P(up); any other day a what-if, computed and never logged (viewing a page is not a request). "Serve and log"
(offered for the deployed model on the ticker's latest data day, outside its training window) serves one
request through `core.predict.predict(kind="direction")`, which logs it once. Its numbers on validation
are the ones stored at registration.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlite_utils

from core.direction import DIRECTION, forecast_direction
from core.direction_charts import confusion_figure, live_brier_figure, reliability_figure
from core.direction_stats import belief_interval, paired_gap
from core.market import MarketDataError, last_trading_day
from core.metrics import (DIRECTION_PREFIXES, better_baseline, calls_in_words, direction_calls, direction_live_summary,
                          one_sided_warning)
from core.predict import InSampleForecastError, logged_forecast, predict
from core.registry import RegistryError, deployed_model, list_models
from core.store import action_guard
from core.text import escape_markdown

BASELINE_NAMES = {  # "always up" is the majority class of the days it learnt from: down where those fell more often
    "always_up": "always up (majority class of its training days)", "persistence": "same as today (persistence)"}


def latest_direction_model(symbol: str, db: sqlite_utils.Database | None = None) -> dict | None:
    """The ticker's deployed direction model, else its newest (any status but archived / rejected), or None."""
    if (deployed := deployed_model(symbol, db=db, kind="direction")) is not None:
        return deployed
    found = [m for m in list_models(symbol, db=db) if m["model_type"] == DIRECTION
             and m["status"] not in ("archived", "rejected")]
    return found[0] if found else None


FLASH_KEY = "fc_dir_flash"  # where the Serve and log callback leaves its outcome for the next run of the page


def serve_and_log(symbol: str, day, state: Any) -> None:
    """The "Serve and log" button's callback: one direction request for `day`, logged once by the serving path;
    its outcome (or why it was refused, or a database fault) goes to `state[FLASH_KEY]` for the page to show."""
    def failed(message: str) -> None:
        state[FLASH_KEY] = ("error", message)

    with action_guard(failed):
        try:
            served = predict(symbol, day, kind="direction")
            state[FLASH_KEY] = ("success", escape_markdown(f"Served and logged P(up) {served.p_up:.1%} for "
                                                           f"{served.target_date} by {served.model_id}."))
        except (MarketDataError, RegistryError, InSampleForecastError) as exc:
            failed(escape_markdown(f"Cannot serve the direction of {symbol} on {pd.Timestamp(day):%Y-%m-%d}: {exc}"))


def _served_forecast(symbol: str, day, model: Mapping[str, Any], db: sqlite_utils.Database | None) -> dict | None:
    """The P(up) served for `symbol` on `day` by `model`, as logged, with its interval of belief; None if none was."""
    logged = logged_forecast(symbol, day, db=db, kind="direction")
    if logged is None or logged.model_id != model["model_id"]:
        return None
    low, high = belief_interval(logged.p_up, pd.DataFrame(model["metrics"].get("reliability", [])))
    return {**logged.to_dict(), "belief_low": low, "belief_high": high, "in_sample": False}


def comparison_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """The model, its uncalibrated self, logistic regression and both baselines on the same validation days."""
    who = [("model (calibrated)", metrics), ("model before calibration", metrics["uncalibrated"]),
           ("logistic regression", metrics["reference"]["logit"]),
           *[(BASELINE_NAMES[name], values) for name, values in metrics["baselines"].items()]]
    return pd.DataFrame([{"who": name, "accuracy": m["accuracy"], "balanced accuracy": m["balanced_accuracy"],
                          "precision": m["precision"], "recall": m["recall"], "F1": m["f1"], "ROC AUC": m["roc_auc"],
                          "log loss": m["log_loss"], "Brier": m["brier"]} for name, m in who])


def verdict(model: Mapping[str, Any]) -> tuple[str, str]:
    """("success" | "warning", words): does the model beat the better baseline on validation (Brier and accuracy)?"""
    m = model["metrics"]
    best = m["baselines"][m["best_baseline"]]
    name, baseline = escape_markdown(model["model_id"]), BASELINE_NAMES[m["best_baseline"]]
    numbers = (f"Brier {m['brier']:.4f} vs {best['brier']:.4f} (skill {m['skill']:+.4f}), accuracy {m['accuracy']:.1%} "
               f"vs {best['accuracy']:.1%} over {m['n']} walk-forward days")
    if m["skill"] > 0 and m["accuracy_edge"] > 0:
        return "success", (f"{name} is ahead of the better baseline by Brier score, {baseline}: {numbers}. "
                           "Certification tests whether that is more than chance.")
    return "warning", (f"{name} does not beat the better baseline by Brier score, {baseline}: {numbers}. On daily "
                       "prices 50-53 % accuracy is normal; treat its P(up) as close to a coin flip.")


def probability_cards(forecast: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[dict]:
    """Four st.metric cards: P(up), its interval of belief, what the model says, how long it took."""
    said = "up" if forecast["p_up"] >= 0.5 else "down"
    return [dict(label=f"P(up) for {forecast['target_date']}", value=f"{forecast['p_up']:.1%}"),
            dict(label="90% interval of belief", value=f"{forecast['belief_low']:.0%}–{forecast['belief_high']:.0%}",
                 help="The up rate observed on validation days that got a similar P(up) (Jeffreys interval)"),
            dict(label="Says", value=said, delta=f"validation accuracy {metrics['accuracy']:.1%}", delta_color="off",
                 delta_arrow="off"),
            dict(label="Latency", value=f"{forecast['latency_ms']:.1f} ms")]


@dataclass
class DirectionSection:
    """What the page draws for a ticker's direction model: cards in a row, then elements as (st function, kwargs)
    (the Serve and log button among them, with `serve_and_log` as its callback)."""

    title: str
    cards: list[dict] = field(default_factory=list)
    elements: list[tuple[str, dict]] = field(default_factory=list)


def direction_section(symbol: str, day, db: sqlite_utils.Database | None = None, state: Any = None) -> DirectionSection | None:
    """The ticker's direction model on `day`: P(up) (served, or a what-if), Serve and log, verdict, table, figures.
    `state` (the page's session state) receives the button's outcome and gives it back on the next run."""
    model = latest_direction_model(symbol, db=db)
    if model is None:
        return None
    m = model["metrics"]
    section = DirectionSection(title=f"Direction: will {symbol} close up or down? ({model['model_id']}, {model['status']})")
    if state is not None and (flash := state.pop(FLASH_KEY, None)):
        section.elements.append((flash[0], dict(body=flash[1])))
    try:
        served = _served_forecast(symbol, day, model, db)
        forecast = served or forecast_direction(model["model_id"], day, db=db).to_dict()
        section.cards = probability_cards(forecast, m)
        note = (" This day is inside its training window: in-sample, no evidence of skill." if forecast["in_sample"] else "")
        said = (f"Served and logged on {forecast['logged_at'][:16].replace('T', ' ')} UTC (request #{forecast['prediction_id']})."
                if served else f"What-if on {forecast['as_of']}: computed now, not logged.{note}")
        section.elements.append(("caption", dict(body=said)))
        if (served is None and model["status"] == "deployed" and not forecast["in_sample"] and state is not None
                and pd.Timestamp(forecast["as_of"]) == last_trading_day(symbol, db=db)):
            section.elements.append(("button", dict(
                label=f"Serve and log P(up) for {forecast['as_of']}", type="primary", key="fc_dir_serve",
                on_click=serve_and_log, args=(symbol, forecast["as_of"], state),
                help="Serve one direction request for the latest data day: logged once, scored when the next close is known")))
    except (MarketDataError, RegistryError) as exc:
        section.elements.append(("error", dict(body=escape_markdown(f"Cannot compute P(up) for {symbol}: {exc}"))))
    kind, words = verdict(model)
    if one_sided := one_sided_warning(model["model_id"], db):  # live: the same call every day (validation hides it)
        section.elements.append(("warning", dict(body=escape_markdown(one_sided))))
    section.elements += [
        (kind, dict(body=words)),
        ("dataframe", dict(data=comparison_table(m), hide_index=True, key="fc_dir_table")),
        ("caption", dict(body=f"Calibration error (ECE) {m['ece_uncalibrated']:.3f} before, {m['ece']:.3f} after "
                              f"{m['calibration']}.")),
        ("plotly_chart", dict(figure_or_data=reliability_figure(m["reliability"]), key="fc_dir_reliability")),
        ("plotly_chart", dict(figure_or_data=confusion_figure(m["confusion"]), key="fc_dir_confusion")),
    ]
    return section


# --- Monitoring: a direction model's served P(up), scored ------------------------------------------------

NOTHING_SCORED = "No predictions with known actuals yet."


def monitoring_elements(metrics: pd.DataFrame, prices_scored: bool, window: int = 20) -> list[tuple[str, dict]]:
    """What the Monitoring page's Accuracy tab draws for the direction models in `metrics` (its daily rows), as
    (st function, kwargs): per model its live accuracy, Brier and log loss beside both baselines, in numbers and
    words, and the rolling Brier score. With nothing scored at all (`prices_scored` False too), the one note."""
    direction = metrics[metrics["model_type"] == DIRECTION].dropna(subset=["brier"])
    if direction.empty:
        return [] if prices_scored else [("info", dict(body=NOTHING_SCORED))]
    elements = []
    for model_id, daily in direction.groupby("model_id"):
        table = direction_live_summary(daily)
        model, best = table.iloc[0], better_baseline(table)
        prefix = DIRECTION_PREFIXES[best["who"]]
        _, low, high, _ = paired_gap(daily["brier"], daily[f"{prefix}brier"])  # lower Brier is better
        _, acc_low, acc_high, _ = paired_gap(daily["accuracy"], daily[f"{prefix}accuracy"])  # higher is better
        judged = "beats" if high < 0 else "is worse than" if low > 0 else "is on par with"
        calls = "fewer" if acc_high < 0 else "more" if acc_low > 0 else None
        words = (f"{model_id} {judged} the better baseline by Brier score, {best['who']}, on live days: Brier "
                 f"{model['Brier']:.4f} vs {best['Brier']:.4f} (daily gap 95% interval {low:+.4f} to {high:+.4f}). "
                 f"Accuracy {model['accuracy %']:.1f}% vs {best['accuracy %']:.1f}% (gap 95% interval {acc_low:+.1f} to "
                 f"{acc_high:+.1f} points"
                 + (f": credibly {calls} right calls" if calls else ": not distinguishable") +
                 f") over {int(model['days'])} scored days; it {calls_in_words(*direction_calls(str(model_id)))}.")
        worse = judged == "is worse than" or calls == "fewer"
        kind = "warning" if worse else "success" if judged == "beats" else "info"
        elements += [("markdown", dict(body=f"**{escape_markdown(model_id)}**: served P(up), scored")),
                     (kind, dict(body=escape_markdown(words))),
                     ("dataframe", dict(data=table.round({"accuracy %": 1, "Brier": 4, "log loss": 4}), hide_index=True,
                                        key=f"mon_dir_table_{model_id}")),
                     ("plotly_chart", dict(figure_or_data=live_brier_figure(daily, window), key=f"mon_dir_brier_{model_id}"))]
    return elements
