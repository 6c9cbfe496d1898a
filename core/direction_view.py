"""What the Forecast page shows about direction models: P(up) with its interval of belief, the comparison with
the baselines in numbers and in words, the reliability diagram and the confusion matrix (no streamlit).

The P(up) shown is a what-if of the ticker's newest direction model for the page's day: computed, never
logged (viewing a page is not a request). Its numbers on validation are the ones stored at registration.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlite_utils

from core.direction import DIRECTION, forecast_direction
from core.direction_charts import confusion_figure, reliability_figure
from core.market import MarketDataError
from core.registry import RegistryError, list_models
from core.text import escape_markdown

BASELINE_NAMES = {"always_up": "always up (majority class)", "persistence": "same as today (persistence)"}


def latest_direction_model(symbol: str, db: sqlite_utils.Database | None = None) -> dict | None:
    """The ticker's newest direction model (any status but archived / rejected), or None."""
    found = [m for m in list_models(symbol, db=db) if m["model_type"] == DIRECTION
             and m["status"] not in ("archived", "rejected")]
    return found[0] if found else None


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
        return "success", f"{name} beats the better baseline, {baseline}: {numbers}."
    return "warning", (f"{name} does not beat the better baseline, {baseline}: {numbers}. On daily prices 50-53 % "
                       "accuracy is normal; treat its P(up) as close to a coin flip.")


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
    """What the page draws for a ticker's direction model: cards in a row, then elements as (st function, kwargs)."""

    title: str
    cards: list[dict] = field(default_factory=list)
    elements: list[tuple[str, dict]] = field(default_factory=list)


def direction_section(symbol: str, day, db: sqlite_utils.Database | None = None) -> DirectionSection | None:
    """The ticker's newest direction model on `day`: P(up) (a what-if, not logged), verdict, table, figures."""
    model = latest_direction_model(symbol, db=db)
    if model is None:
        return None
    m = model["metrics"]
    section = DirectionSection(title=f"Direction: will {symbol} close up or down? ({model['model_id']}, {model['status']})")
    try:
        forecast = forecast_direction(model["model_id"], day, db=db).to_dict()
        section.cards = probability_cards(forecast, m)
        note = (" This day is inside its training window: in-sample, no evidence of skill." if forecast["in_sample"] else "")
        section.elements.append(("caption", dict(body=f"What-if on {forecast['as_of']}: computed now, not logged.{note}")))
    except (MarketDataError, RegistryError) as exc:
        section.elements.append(("error", dict(body=escape_markdown(f"Cannot compute P(up) for {symbol}: {exc}"))))
    kind, words = verdict(model)
    section.elements += [
        (kind, dict(body=words)),
        ("dataframe", dict(data=comparison_table(m), hide_index=True, key="fc_dir_table")),
        ("caption", dict(body=f"Calibration error (ECE) {m['ece_uncalibrated']:.3f} before, {m['ece']:.3f} after "
                              f"{m['calibration']}.")),
        ("plotly_chart", dict(figure_or_data=reliability_figure(m["reliability"]), key="fc_dir_reliability")),
        ("plotly_chart", dict(figure_or_data=confusion_figure(m["confusion"]), key="fc_dir_confusion")),
    ]
    return section
