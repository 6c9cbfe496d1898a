"""A/B analysis: reads an experiment's predictions and compares its arms (`analyze`, `recommend`); writes nothing.

Only predictions made on or before `as_of` whose actual is known are compared, and never a day inside
an arm's training window. The statistics are `core.ab_stats`; the experiments table is `core.abtest`'s.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlite_utils

from core.ab_stats import DECISION_RULE, SRM_ALPHA, ArmComparison, compare_arms
from core.direction_stats import probability_losses
from core.registry import get_model
from core.store import get_db


def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"

@dataclass(frozen=True)
class ExperimentAnalysis:
    experiment: dict
    as_of: str
    arms: pd.DataFrame  # per arm: model_id, share, served, n, MAE, RMSE, MAPE, direction %
    comparison: ArmComparison
    observations: pd.DataFrame  # the predictions used: arm, model_id, as_of, target_date, loss, abs_error...
    track: pd.DataFrame  # per daily look: date, comparison, n, p_sequential, p_fixed
    winner: str | None
    winner_model_id: str | None
    significant: bool
    improvement_pct: float
    planned_end_reached: bool
    recommendation: str
    decision_rule: str = DECISION_RULE

    def results_csv(self) -> str:
        """Per-arm results and every prediction used, as one CSV (the page's download)."""
        head = self.arms.assign(section="arm_summary")
        rows = self.observations.assign(section="prediction")
        return pd.concat([head, rows], ignore_index=True).to_csv(index=False)


def first_scored_day(experiment: Mapping, db: sqlite_utils.Database) -> str:
    """The first day on which no arm is inside its training window: the latest arm train_end
    (a forecast made on train_end targets the next, unseen close; see core.predict.in_training_window)."""
    return max(get_model(a["model_id"], db=db)["train_end"] for a in experiment["arms"])


def _observations(experiment: dict, as_of: str | None, db: sqlite_utils.Database) -> pd.DataFrame:
    """Predictions of the experiment made up to `as_of`; an actual whose day is after `as_of` is
    not known then, so it is blanked (the request still counts for the sample-ratio check).

    Rows made on a day inside any arm's training window (logged before that was refused) are left
    out: a model scored on the closes it was trained on could win on in-sample luck.
    """
    clause, params = ("AND as_of <= ?", [as_of]) if as_of else ("", [])
    first_scored = first_scored_day(experiment, db)
    frame = pd.read_sql_query(
        "SELECT id, arm, model_id, as_of, target_date, request_key, served, last_close, predicted_close, p_up, "
        "CASE WHEN ? IS NULL OR target_date <= ? THEN actual_close END AS actual_close "
        f"FROM predictions WHERE experiment_id = ? AND as_of >= ? {clause} ORDER BY target_date, id",
        db.conn, params=[as_of, as_of, experiment["id"], first_scored, *params],
    )
    numeric = ["actual_close", "predicted_close", "p_up", "last_close"]  # all unknown yet: an object column of None
    frame[numeric] = frame[numeric].astype(float)
    frame["abs_error"] = (frame["predicted_close"] - frame["actual_close"]).abs()
    frame["ape"] = frame["abs_error"] / frame["actual_close"] * 100
    frame["up"] = (frame["actual_close"] > frame["last_close"]).astype(float).where(frame["actual_close"].notna())
    frame["log_loss"], frame["brier"] = probability_losses(frame["p_up"].to_numpy(), frame["up"].to_numpy())
    frame["loss"] = frame[experiment["metric"] if experiment["metric"] in ("log_loss", "brier") else
                          ("abs_error" if experiment["metric"] == "mae" else "ape")]
    frame["direction_hit"] = np.where(
        frame["last_close"].notna() & frame["actual_close"].notna(),
        np.sign(frame["predicted_close"] - frame["last_close"]) == np.sign(frame["actual_close"] - frame["last_close"]),
        np.nan,
    )
    return frame


def _arm_table(experiment: dict, used: pd.DataFrame, all_rows: pd.DataFrame) -> pd.DataFrame:
    served = all_rows[all_rows["served"] == 1].groupby("arm").size()
    grouped = used.groupby("arm")
    rows = []
    for arm in experiment["arms"]:
        name = arm["arm"]
        group = grouped.get_group(name) if name in grouped.groups else used.iloc[0:0]
        rows.append({
            "arm": name, "model_id": arm["model_id"], "share %": arm["traffic_share"] * 100,
            "served": int(served.get(name, 0)), "n": len(group),
            "MAE $": group["abs_error"].mean(), "RMSE $": float(np.sqrt((group["abs_error"] ** 2).mean())),
            "MAPE %": group["ape"].mean(), "direction %": group["direction_hit"].astype(float).mean() * 100,
            **({"log loss": group["log_loss"].mean(), "Brier": group["brier"].mean(),
                "accuracy %": ((group["p_up"] >= 0.5) == (group["up"] == 1)).mean() * 100}
               if experiment["metric"] in ("log_loss", "brier") else {}),
        })
    return pd.DataFrame(rows)


def analyze_experiment(experiment: dict, as_of=None, db: sqlite_utils.Database | None = None) -> ExperimentAnalysis:
    """Per-arm metrics, the comparison (Welch or paired + always-valid mSPRT), SRM and a recommendation.

    Only predictions made on or before `as_of` (default: all) whose actual is known are compared.
    Shadow experiments compare arms on the same requests (paired); others as independent samples.
    """
    db = db or get_db()
    cutoff = _day(as_of) if as_of is not None else None
    rows = _observations(experiment, cutoff, db)
    known = rows.dropna(subset=["actual_close"])
    arm_names = [a["arm"] for a in experiment["arms"]]
    shares = [a["traffic_share"] for a in experiment["arms"]]
    if experiment["shadow"]:
        wide = known.pivot_table(index=["target_date", "request_key"], columns="arm", values="loss", aggfunc="first")
        wide = wide.reindex(columns=arm_names).dropna().sort_index()
        used = known.merge(wide.reset_index()[["target_date", "request_key"]], on=["target_date", "request_key"])
        days = wide.index.get_level_values("target_date")
        day_codes = pd.factorize(days, sort=True)[0]
        losses = {arm: wide[arm].to_numpy() for arm in arm_names}
        look_of = {arm: day_codes for arm in arm_names}
        look_days = np.unique(days)
    else:
        used = known[known["served"] == 1]
        look_days = np.unique(used["target_date"])
        codes = np.searchsorted(look_days, used["target_date"].to_numpy())
        losses = {arm: used.loc[used["arm"] == arm, "loss"].to_numpy() for arm in arm_names}
        look_of = {arm: codes[(used["arm"] == arm).to_numpy()] for arm in arm_names}
    served_counts = rows[rows["served"] == 1].groupby("arm").size().reindex(arm_names, fill_value=0).to_dict()
    if min(shares) == 0:  # a shadow arm that takes no traffic: no split to check for a sample-ratio mismatch
        served_counts = None
    comparison = compare_arms(losses, shares, experiment["confidence_level"], experiment["min_samples"],
                              paired=experiment["shadow"], served_counts=served_counts, looks=look_of)
    track = comparison.track.assign(date=lambda t: np.asarray(look_days)[t["look"]] if len(look_days) else [])
    last_day = cutoff or (str(rows["as_of"].max()) if len(rows) else experiment["start_date"])
    end_reached = last_day >= experiment["end_date"] or experiment["status"] != "running"
    winner_model = next((a["model_id"] for a in experiment["arms"] if a["arm"] == comparison.winner), None)
    return ExperimentAnalysis(
        experiment=experiment, as_of=last_day, arms=_arm_table(experiment, used, rows), comparison=comparison,
        observations=used.drop(columns=["loss"]).reset_index(drop=True), track=track, winner=comparison.winner,
        winner_model_id=winner_model, significant=comparison.significant, improvement_pct=comparison.improvement_pct,
        planned_end_reached=end_reached, recommendation=recommend(experiment, comparison, end_reached),
    )


def recommend(experiment: dict, result: ArmComparison, planned_end_reached: bool) -> str:
    """The decision in one or two plain sentences."""
    metric = experiment["metric"].upper()
    if result.srm_flag:
        return (f"Sample ratio mismatch (chi-square p = {result.srm_p:.2g} < {SRM_ALPHA}): the arms did not get "
                "the traffic they were configured for. Find the routing problem before trusting any result.")
    if not result.enough_samples:
        short = ", ".join(f"{a} {result.n[a]}/{experiment['min_samples']}" for a in result.arms
                          if result.n[a] < experiment["min_samples"])
        return f"Keep collecting: too few predictions with known outcomes yet ({short}). No winner is declared before that."
    best = min(result.comparisons, key=lambda c: c.p_sequential)
    if result.winner and result.winner != result.arms[0]:
        model = next(a["model_id"] for a in experiment["arms"] if a["arm"] == result.winner)
        return (f"Deploy arm {result.winner} ({model}): its {metric} is {result.improvement_pct:.1f}% lower than the "
                f"control's, significant under the peeking-safe rule (p = {best.p_sequential:.3g}).")
    if result.winner:
        return (f"Keep the control (arm {result.winner}): every challenger's {metric} is significantly higher "
                f"(its {metric} is {result.improvement_pct:.1f}% lower than the best challenger's).")
    if experiment["status"] != "running":
        return (f"Stopped on {experiment['stopped_at']} without a significant difference "
                f"(best always-valid p = {best.p_sequential:.3g}); nothing was deployed by the test.")
    if planned_end_reached:
        return (f"No significant difference by the planned end date (best always-valid p = {best.p_sequential:.3g}): "
                "keep the control, or extend the test if a small difference would matter.")
    return (f"No significant difference yet (best always-valid p = {best.p_sequential:.3g}, needed <= "
            f"{result.alpha_per_comparison:.3g}); keep the test running until {experiment['end_date']}.")
