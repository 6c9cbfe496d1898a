"""The Monitoring page's model-health view: reads a model's scored served predictions, its reference
window and its stored SHAP importance, and hands them to `core.model_health` (statistics, no database).

Only served predictions with a known actual close, made on or after the model's `train_end`
(`core.predict.in_training_window`: never a day inside its training window) are judged; the reference
window is the training window itself, `train_start` to `train_end`, as the drift checks use it.
Writes nothing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd
import sqlite_utils

from core import model_health
from core.explain import ExplainError, artifact_files, window_features
from core.metrics import (SKILL_CONFIDENCE, better_baseline, calls_in_words, direction_calls, direction_live_summary,
                          live_skill_of, metrics_frame)
from core.registry import DIRECTION_TYPE, get_model
from core.store import get_db

TOP_FEATURES = 3


@dataclass(frozen=True)
class ModelHealth:
    """What the Monitoring page shows for one model: a note instead when there is nothing to judge."""

    model_id: str
    days: int = 0
    note: str | None = None
    regimes: pd.DataFrame = field(default_factory=pd.DataFrame)
    deciles: pd.DataFrame = field(default_factory=pd.DataFrame)
    features_note: str | None = None
    caption: str = ""


def scored_predictions(model: dict, db: sqlite_utils.Database) -> pd.DataFrame:
    """Served predictions of `model` with a known actual, made on or after its train_end, oldest first."""
    return pd.read_sql_query(
        "SELECT as_of, target_date, predicted_close, last_close, actual_close FROM predictions "
        "WHERE model_id = ? AND served = 1 AND actual_close IS NOT NULL AND as_of >= ? ORDER BY as_of",
        db.conn, params=[model["model_id"], str(model["train_end"])[:10]])


def top_shap_features(model_id: str, top: int = TOP_FEATURES) -> list[str]:
    """The `top` features by mean |SHAP| in the model's stored importance file, or [] when there is none."""
    path = artifact_files(model_id).get("importance_json")
    if path is None:
        return []
    try:
        rows = json.loads(path.read_text()).get("features", [])
    except (OSError, ValueError):
        return []
    ranked = sorted((r for r in rows if isinstance(r, dict) and "feature" in r),
                    key=lambda r: r.get("shap_rank", float("inf")))
    return [r["feature"] for r in ranked[:top]]


def _headline(model_id: str, days: int, regimes: pd.DataFrame, deciles: pd.DataFrame) -> str:
    """One sentence: how many days are judged and where the model does worst."""
    parts = [f"{model_id}: {days} served forecasts scored against the actual close (none inside the training window); "
             "skill = 1 - MAE / naive MAE on the same days; regime and decile cut points come from the training window."]
    for label, table, name in (("regime", regimes, "group"), ("feature decile", deciles, "decile")):
        if table.empty:
            continue
        worst = model_health.weakest(table)
        if worst is not None:
            where = f"{worst['feature']} decile {worst[name]}" if label == "feature decile" else str(worst[name])
            parts.append(f"Weakest {label}: {where} (skill {worst['skill']:+.3f} over {int(worst['days'])} days, "
                         f"{worst['gap_low']:+.3f} to {worst['gap_high']:+.3f} below the other days at "
                         f"{model_health.STANDOUT_CONFIDENCE:.0%}).")
        else:
            parts.append(f"No {label} stands out: the lowest skills are within the noise of the other days "
                         "(bootstrap interval of the difference includes 0).")
    return " ".join(parts)


def model_health_view(model_id: str | None, db: sqlite_utils.Database | None = None) -> ModelHealth:
    """Error and skill of `model_id` by market regime and by decile of its top SHAP features (None: nothing scored)."""
    if model_id is None:
        return ModelHealth("", note="No predictions with known actuals yet: the model health appears once some are scored.")
    db = db or get_db()
    model = get_model(model_id, db=db)
    if model["model_type"] == DIRECTION_TYPE:
        return ModelHealth(model_id, note=f"{model_id} is a direction model: its live accuracy, Brier score and log loss "
                                          "beside the baselines are on the Accuracy tab; health by regime covers price models.")
    scored = scored_predictions(model, db)
    if scored.empty:
        return ModelHealth(model_id, note=f"{model_id} has no served forecast with a known actual close after its "
                                          f"training window (ends {model['train_end']}) yet: nothing to judge.")
    try:
        frame = window_features(model["symbol"], start=model["train_start"], end=scored["as_of"].iloc[-1], db=db)
    except ExplainError as exc:
        return ModelHealth(model_id, note=str(exc))
    reference = frame.loc[pd.Timestamp(model["train_start"]):pd.Timestamp(model["train_end"])]
    features_by_day = frame.drop(columns=["target", "close"])
    joined = scored.merge(features_by_day, left_on=pd.to_datetime(scored["as_of"]), right_index=True).dropna()
    if joined.empty or reference.empty:
        return ModelHealth(model_id, note=f"{model_id}: no feature rows for its scored days or its training window.")
    regimes = model_health.regime_errors(joined, reference)
    features = [f for f in top_shap_features(model_id) if f in joined.columns]
    deciles = model_health.feature_decile_errors(joined, reference, features)
    features_note = None if features else (
        f"{model_id} has no stored SHAP importance (a naive model, or artifacts not written): write them from "
        "Model Management to see error by feature decile.")
    return ModelHealth(model_id, days=len(joined), regimes=regimes, deciles=deciles, features_note=features_note,
                       caption=_headline(model_id, len(joined), regimes, deciles))


def default_model(metrics: pd.DataFrame, db: sqlite_utils.Database | None = None) -> str | None:
    """The model to judge when the page shows "All": the deployed model (the one Home shows) with the most scored
    days in `metrics`, else the model with the most scored days."""
    scored = metrics.dropna(subset=["mae"])
    if scored.empty:
        return None
    days = scored.groupby("model_id")["date"].nunique()
    deployed = {row[0] for row in (db or get_db()).execute("SELECT model_id FROM models WHERE status = 'deployed'")}
    live = days[days.index.isin(deployed)]
    return str((live if not live.empty else days).idxmax())


def direction_skill_card(model_id: str, db: sqlite_utils.Database | None = None) -> dict:
    """`st.metric` arguments for a direction model: its live accuracy over its scored days beside "always up",
    and how often it called up (a model that always calls up scores exactly what "always up" scores)."""
    summary = direction_live_summary(metrics_frame(model_id=model_id, db=db)).set_index("who")
    days, calls = int(summary.loc["model", "days"]), calls_in_words(*direction_calls(model_id, db))
    if days == 0:
        return {"label": "Live accuracy", "value": "—", "delta": f"no scored P(up) yet; {calls}", "delta_color": "off",
                "delta_arrow": "off"}
    model, up, best = summary.loc["model"], summary.loc["always up"], better_baseline(summary.reset_index())
    return {"label": f"Live accuracy ({days} scored days)", "value": f"{model['accuracy %']:.1f}%",
            "delta": f"always up {up['accuracy %']:.1f}%", "delta_color": "off", "delta_arrow": "off",
            "help": f"{model_id}: share of correct up/down calls over its served, scored days; it {calls}. Brier "
                    f"{model['Brier']:.4f} vs {best['Brier']:.4f} for the better baseline, {best['who']} "
                    "(lower is better); the accuracy tab has every day."}


def skill_card(model_id: str | None, db: sqlite_utils.Database | None = None) -> dict:
    """`st.metric` arguments for a model's live skill: the number and words of `core.metrics.live_skill_of`, the
    ones Home, Forecast and the accuracy alert show for the same model."""
    model = get_model(model_id, db=db, missing_ok=True) if model_id else None
    if model is not None and model["model_type"] == DIRECTION_TYPE:
        return direction_skill_card(model_id, db)
    live = live_skill_of(model_id, db=db) if model_id else None
    if live is None or live["days"] == 0:
        return {"label": "Live skill", "value": "—", "delta": "no live history yet", "delta_color": "off", "delta_arrow": "off"}
    color = {"beats naive": "green", "worse than naive": "red"}.get(live["verdict"], "gray")
    return {"label": f"Live skill (last {live['days']} scored days)", "value": f"{live['skill']:+.3f}", "delta": live["verdict"],
            "delta_color": color, "delta_arrow": "off",
            "help": f"{model_id}: 1 − MAE/MAE_naive over its served, scored days {live['start']} → {live['end']}; daily gain "
                    f"over naive \\${live['gain_low']:+.3f} to \\${live['gain_high']:+.3f} ({SKILL_CONFIDENCE:.0%} interval)"}


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """A regime or decile table for the page: $ and skill rounded, share in %, the columns named as elsewhere."""
    shown = table.rename(columns={"group": "regime", "mae": "MAE $", "naive_mae": "naive MAE $", "skill": "skill vs naive"})
    shown["share"] = (table["share"] * 100).round(0)
    gap = [f"{lo:+.3f} to {hi:+.3f}" if pd.notna(lo) else "" for lo, hi in zip(table["gap_low"], table["gap_high"])]
    shown = shown.drop(columns=["gap_low", "gap_high", "stands_out"]).assign(**{"skill vs other days (interval)": gap})
    return shown.rename(columns={"share": "share %"}).round({"MAE $": 3, "naive MAE $": 3, "skill vs naive": 3})
