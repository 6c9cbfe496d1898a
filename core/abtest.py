"""A/B tests between model versions: owns the `experiments` and `experiment_arms` tables (the only writer).

An experiment splits one ticker's serving traffic between two or more registered models ("arms";
arm A is the control, usually the champion). The serving path (`core.predict.active_route`) reads the
running experiments to route each request; `analyze` compares the arms' prediction errors
(`core.ab_analysis`, with the peeking-safe statistics of `core.ab_stats`); `stop` ends a test and
deploys the winner through the registry. What a new test may be is `core.ab_validation`; replaying
historical days through the serving path is `core.ab_replay`. Predictions made outside the app are
validated here and logged by the serving path.
"""
from __future__ import annotations

import logging
import string
from collections.abc import Sequence

import numpy as np
import pandas as pd
import sqlite_utils

from core.ab_analysis import ExperimentAnalysis, analyze_experiment
from core.ab_stats import ArmComparison, ExperimentError
from core.ab_validation import (DURATION_DAYS, MIN_SAMPLES, as_number, bounded_int, check_start, in_sample_days, iso_day,
                                start_day, validate_new)
from core.config import get_settings
from core.formatting import NOT_ENOUGH, finite, interval, number, p_value
from core.market import next_trading_day
from core.predict import in_training_window, log_external_prediction, set_experiment_actual
from core.registry import DIRECTION_TYPE, deploy, deployed_model, get_model, model_kind
from core.store import audit, get_db, transaction, utc_now, where_clause

log = logging.getLogger(__name__)


# --- experiments (storage) ----------------------------------------------------------------------------

def create_experiment(
    name: str,
    symbol: str,
    arms: Sequence[tuple[str, float]],
    start_date,
    duration_days: int = 30,
    min_samples: int | None = None,
    confidence_level: float | None = None,
    metric: str = "mae",
    shadow: bool = False,
    actor: str = "user",
    db: sqlite_utils.Database | None = None,
) -> int:
    """Start an experiment on `symbol` with `arms` = [(model_id, share), ...]; returns its id.

    Arms are named A, B, C... in the order given; A is the control. The same model may appear in
    two arms (an A/A test checks the pipeline). Shares are fractions summing to 1. Every parameter is
    bounded (`core.ab_validation`: MAX_NAME_LENGTH, MAX_ARMS, DURATION_DAYS, MIN_SAMPLES, CONFIDENCE_LEVEL) and every arm's
    artifact must pass the registry's integrity check.
    """
    db = db or get_db()
    settings = get_settings()
    min_samples = bounded_int("min_samples", settings.ab_min_samples if min_samples is None else min_samples, *MIN_SAMPLES)
    duration_days = bounded_int("The duration (days)", duration_days, *DURATION_DAYS)
    confidence_level = as_number("confidence_level", settings.ab_confidence_level if confidence_level is None else confidence_level)
    name, symbol = str(name or "").strip(), str(symbol or "").strip().upper()
    validate_new(name, symbol, arms, confidence_level, metric, db, shadow)
    start = start_day(start_date)
    check_start(symbol, start, db)
    with transaction(db):
        if list(db.query("SELECT id FROM experiments WHERE name = ?", [name])):
            raise ExperimentError(f"An experiment named {name!r} already exists: choose another name.")
        kind = model_kind(get_model(str(arms[0][0]), db=db)["model_type"])  # validate_new: all arms of one kind
        running = list(db.query(  # one running test per ticker and kind: a direction test never routes a price request
            "SELECT DISTINCT e.name FROM experiments e JOIN experiment_arms a ON a.experiment_id = e.id "
            "JOIN models m ON m.model_id = a.model_id WHERE e.symbol = ? AND e.status = 'running' "
            "AND (m.model_type = ?) = ?", [symbol, DIRECTION_TYPE, int(kind == "direction")]))
        if running:
            what = "experiment" if kind == "price" else "direction experiment"
            raise ExperimentError(f"{symbol} already has a running {what} ({running[0]['name']}): stop it first.")
        table = db["experiments"]
        table.insert({
            "name": name, "symbol": symbol, "status": "running", "created_at": utc_now(),
            "start_date": iso_day(start), "end_date": iso_day(start + pd.Timedelta(days=duration_days - 1)),  # last day, inclusive
            "min_samples": min_samples, "confidence_level": confidence_level, "metric": metric,
            "shadow": int(bool(shadow)), "winner": None, "stopped_at": None,
        })
        experiment_id = table.last_pk
        db["experiment_arms"].insert_all(
            [{"experiment_id": experiment_id, "arm": string.ascii_uppercase[i], "model_id": str(model_id),
              "traffic_share": float(share)} for i, (model_id, share) in enumerate(arms)],
            pk=("experiment_id", "arm"),
        )
        audit(db, actor, "create_experiment", f"experiment:{experiment_id}", {
            "name": name, "symbol": symbol, "arms": [list(a) for a in arms], "shadow": bool(shadow),
            "min_samples": min_samples, "confidence_level": confidence_level, "metric": metric,
        })
    log.info("experiment %d (%s) started on %s with %d arms", experiment_id, name, symbol, len(arms))
    return experiment_id


def get_experiment(experiment_id: int, db: sqlite_utils.Database | None = None) -> dict:
    """The experiment row with its arms (list of dicts, ordered A, B, ...)."""
    db = db or get_db()
    rows = list(db.query("SELECT * FROM experiments WHERE id = ?", [int(experiment_id)]))
    if not rows:
        raise ExperimentError(f"No experiment with id {experiment_id}.")
    experiment = dict(rows[0])
    experiment["shadow"] = bool(experiment["shadow"])
    experiment["arms"] = list(db.query(
        "SELECT arm, model_id, traffic_share FROM experiment_arms WHERE experiment_id = ? ORDER BY arm", [experiment["id"]]
    ))
    return experiment


def list_experiments(symbol: str | None = None, status: str | None = None,
                     db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Experiments, running first then newest, with their arms and served counts, for overview tables."""
    db = db or get_db()
    where, params = where_clause(("e.symbol = ?", symbol), ("e.status = ?", status))
    return pd.read_sql_query(
        "SELECT e.id, e.name, e.symbol, e.status, e.start_date, e.end_date, e.min_samples, e.confidence_level, "
        "e.metric, e.shadow, e.winner, e.stopped_at, "
        "(SELECT GROUP_CONCAT(a.arm || '=' || a.model_id || ' (' || CAST(ROUND(a.traffic_share * 100) AS INT) || '%)', ', ') "
        " FROM experiment_arms a WHERE a.experiment_id = e.id) AS arms, "
        "(SELECT COUNT(*) FROM predictions p WHERE p.experiment_id = e.id AND p.served = 1) AS served "
        f"FROM experiments e {where} ORDER BY e.status = 'running' DESC, e.id DESC",
        db.conn, params=params,
    )


# --- predictions from outside the app -----------------------------------------------------------------

def record_prediction(
    experiment_id: int, model_id: str, predicted_close: float, as_of, last_close: float | None = None,
    target_date=None, request_key: str | None = None, actual_close: float | None = None,
    db: sqlite_utils.Database | None = None,
) -> int:
    """Log a prediction made outside the app for an arm of a running experiment; returns its id.

    The actual can come later through `record_actual`. The row is served (it answered a request), so
    the serving path's evidence rules hold: a day outside the test's dates or inside the model's
    training window is refused, and an arm has one prediction per day: recording the same one again
    (a retry) returns the logged id, a different one for a day already recorded is refused.
    """
    db = db or get_db()
    experiment = get_experiment(experiment_id, db=db)
    if experiment["status"] != "running":
        raise ExperimentError(f"Experiment {experiment['name']} is {experiment['status']}: it takes no new predictions.")
    arm = next((a["arm"] for a in experiment["arms"] if a["model_id"] == model_id), None)
    if arm is None:
        raise ExperimentError(f"{model_id} is not an arm of experiment {experiment['name']}.")
    if not np.isfinite(predicted_close) or predicted_close <= 0:
        raise ExperimentError(f"predicted_close must be a positive price, got {predicted_close}.")
    as_of_day = iso_day(as_of)
    if not experiment["start_date"] <= as_of_day <= experiment["end_date"]:
        raise ExperimentError(f"{as_of_day} is outside experiment {experiment['name']} "
                              f"({experiment['start_date']} to {experiment['end_date']}).")
    train_end = get_model(model_id, db=db)["train_end"]
    if in_training_window(train_end, as_of_day):
        raise ExperimentError(f"{as_of_day} is inside the training window of {model_id} (trained on closes up to "
                              f"{train_end}): an in-sample prediction is not evidence. The first allowed day is {train_end}.")
    row = {
        "model_id": model_id, "symbol": experiment["symbol"], "as_of": as_of_day,
        # the close a next-day forecast is judged on is the next trading day's, never as_of's own
        "target_date": iso_day(target_date) if target_date is not None else iso_day(next_trading_day(experiment["symbol"], as_of, db=db)),
        "predicted_close": float(predicted_close), "lower": None, "upper": None, "last_close": last_close,
        "latency_ms": None, "experiment_id": experiment["id"], "arm": arm,
        "request_key": request_key or f"external:{experiment['id']}:{as_of_day}:{arm}",
        "actual_close": actual_close, "served": 1, "created_at": utc_now(),
    }
    logged_id, logged_close, inserted = log_external_prediction(row, db=db)
    if inserted:
        return logged_id
    if logged_close != row["predicted_close"]:
        raise ExperimentError(f"Arm {arm} of {experiment['name']} already has a prediction for {as_of_day} "
                              f"(id {logged_id}, ${logged_close:,.2f}): one prediction per arm and day.")
    return logged_id


def record_actual(prediction_id: int, actual_close: float, db: sqlite_utils.Database | None = None) -> None:
    """Attach the realised close to a prediction recorded with `record_prediction`."""
    db = db or get_db()
    if not np.isfinite(actual_close) or actual_close <= 0:
        raise ExperimentError(f"actual_close must be a positive price, got {actual_close}.")
    if not set_experiment_actual(prediction_id, float(actual_close), db=db):
        raise ExperimentError(f"No experiment prediction with id {prediction_id}.")


def analyze(experiment_id: int, as_of=None, db: sqlite_utils.Database | None = None) -> ExperimentAnalysis:
    """Per-arm metrics, the comparison (Welch or paired + always-valid mSPRT), SRM and a recommendation
    for experiment `experiment_id` (see `core.ab_analysis.analyze_experiment`)."""
    db = db or get_db()
    return analyze_experiment(get_experiment(experiment_id, db=db), as_of=as_of, db=db)


# --- stop -----------------------------------------------------------------------------------------

def stop(
    experiment_id: int, deploy_winner: bool = True, as_of=None, actor: str = "user", override: bool = False,
    db: sqlite_utils.Database | None = None,
) -> dict:
    """Stop a running experiment, record the winner and (optionally) deploy it, all in one transaction.

    If the registry refuses the deploy (e.g. a certification gate), nothing is changed and the
    registry's error propagates: the caller can retry with `override=True`, which is passed on to
    `core.registry.deploy`.
    """
    db = db or get_db()
    deployed = None
    with transaction(db):  # analysis and stop under one write lock: two stops cannot both succeed
        analysis = analyze(experiment_id, as_of=as_of, db=db)
        experiment = analysis.experiment
        if experiment["status"] != "running":
            raise ExperimentError(f"Experiment {experiment['name']} is already {experiment['status']}.")
        if deploy_winner and analysis.winner_model_id and analysis.comparison.srm_flag and not override:
            raise ExperimentError(
                f"Experiment {experiment['name']} has a sample-ratio mismatch (chi-square p = "
                f"{analysis.comparison.srm_p:.2g}): the traffic split is broken, so its winner cannot be trusted. "
                "Stop it without deploying, or deploy with an explicit override."
            )
        if deploy_winner and analysis.winner_model_id and (in_sample := in_sample_days(experiment, analysis.observations, db)):
            raise ExperimentError(
                f"Experiment {experiment['name']}'s result cannot deploy: {len(in_sample)} analysed day(s) ({in_sample[0]} to "
                f"{in_sample[-1]}) are inside an arm's training window, so a model was scored on closes it was trained on. "
                "Stop it without deploying."
            )
        db.execute("UPDATE experiments SET status = 'stopped', winner = ?, stopped_at = ? WHERE id = ? AND status = 'running'",
                   [analysis.winner, analysis.as_of, experiment["id"]])
        kind = model_kind(get_model(experiment["arms"][0]["model_id"], db=db)["model_type"])  # the arms' kind
        current = deployed_model(experiment["symbol"], db=db, kind=kind)
        if deploy_winner and analysis.winner_model_id and (current is None or current["model_id"] != analysis.winner_model_id):
            extra = {"override": True} if override else {}
            deploy(analysis.winner_model_id, actor=actor, db=db, expected_champion=current["model_id"] if current else None,
                   reason=f"A/B test {experiment['name']}: arm {analysis.winner} won", **extra)
            deployed = analysis.winner_model_id
        audit(db, actor, "stop_experiment", f"experiment:{experiment['id']}", {
            "name": experiment["name"], "symbol": experiment["symbol"], "as_of": analysis.as_of,
            "winner": analysis.winner, "winner_model_id": analysis.winner_model_id, "deployed": deployed,
            "override": override, "decision_rule": analysis.decision_rule, "improvement_pct": analysis.improvement_pct,
            "p_sequential": [c.p_sequential for c in analysis.comparison.comparisons],
            "p_fixed": [c.p_fixed for c in analysis.comparison.comparisons], "srm_p": analysis.comparison.srm_p,
            "n": analysis.comparison.n, "recommendation": analysis.recommendation,
        })
    log.info("experiment %d stopped: winner %s, deployed %s", experiment["id"], analysis.winner, deployed)
    return {"experiment_id": experiment["id"], "winner": analysis.winner, "winner_model_id": analysis.winner_model_id,
            "deployed": deployed, "recommendation": analysis.recommendation}


# --- the comparison in words, for the page ---------------------------------------------------------------

def improvement_text(result: ArmComparison, metric: str = "mae") -> str:
    """Which arm beats which, in words: "arm B's MAE is 3.2% lower than arm A's" (NOT_ENOUGH without data).

    The arm with the lowest mean loss against the control, or, when the control is lowest, against
    the best challenger; significance is the recommendation's business, not this sentence's.
    """
    losses = {a: result.mean_loss.get(a, float("nan")) for a in result.arms}
    if not all(finite(v) for v in losses.values()):
        return NOT_ENOUGH
    control = result.arms[0]
    best = min(losses, key=losses.get)
    other = control if best != control else min(result.arms[1:], key=losses.get)
    if not losses[other] or losses[best] == losses[other]:
        return f"arms {best} and {other}: same {metric.upper()}"
    pct = (losses[other] - losses[best]) / losses[other] * 100
    return f"arm {best}'s {metric.upper()} is {pct:.1f}% lower than arm {other}'s"


def comparisons_frame(result: ArmComparison) -> pd.DataFrame:
    """The challenger-vs-control comparisons for reading: p-values in scientific notation when tiny,
    "not enough data" for bounds that are still infinite or values not defined yet."""
    return pd.DataFrame([{
        "comparison": f"{c.arm} vs {c.control}", "test": c.test, "n": f"{c.n} vs {c.n_control}",
        "difference": number(c.difference, "+.4f"), "always-valid p": p_value(c.p_sequential),
        "always-valid interval": interval(c.cs_low, c.cs_high, "+.4f"), "t-test p (look once)": p_value(c.p_fixed),
        "t-test interval": interval(c.ci_low, c.ci_high, "+.4f"), "significant": "yes" if c.significant else "no",
    } for c in result.comparisons])
