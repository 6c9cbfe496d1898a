"""The database schema: its migrations, in order (`MIGRATIONS`); `core.store.migrate` applies the pending ones.

PRAGMA user_version records how many have been applied. Append, never edit.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable

import sqlite_utils

log = logging.getLogger(__name__)


def _m001_initial(db: sqlite_utils.Database) -> None:
    db["prices"].create(
        {"symbol": str, "date": str, "open": float, "high": float, "low": float, "close": float,
         "adj_close": float, "volume": float, "source": str},
        pk=("symbol", "date"),
    )
    db["models"].create(
        {"model_id": str, "symbol": str, "model_type": str, "version": int, "status": str,
         "created_at": str, "train_start": str, "train_end": str, "params_json": str,
         "features_json": str, "feature_signature": str, "metrics_json": str, "artifact_path": str,
         "artifact_sha256": str, "parent_id": str, "reason": str, "certified": int},
        pk="model_id",
        foreign_keys=[("parent_id", "models", "model_id")],
        defaults={"certified": 0},
    )
    db["models"].create_index(["symbol", "status"])
    db["models"].create_index(["symbol", "model_type", "version"], unique=True)
    db["predictions"].create(
        {"id": int, "model_id": str, "symbol": str, "as_of": str, "target_date": str,
         "predicted_close": float, "lower": float, "upper": float, "last_close": float,
         "latency_ms": float, "experiment_id": int, "arm": str, "request_key": str,
         "actual_close": float, "served": int, "created_at": str},
        pk="id",
        foreign_keys=[("model_id", "models", "model_id")],
        defaults={"served": 1},
    )
    db["predictions"].create_index(["symbol", "as_of"])
    db["predictions"].create_index(["model_id", "target_date"])
    db["predictions"].create_index(["experiment_id"])
    db["drift_checks"].create(
        {"id": int, "model_id": str, "as_of": str, "window_days": int, "overall_drift": int,
         "severity": str, "reasons_json": str, "report_json": str, "created_at": str},
        pk="id",
        foreign_keys=[("model_id", "models", "model_id")],
    )
    db["drift_checks"].create_index(["model_id", "as_of"])
    db["experiments"].create(
        {"id": int, "name": str, "symbol": str, "status": str, "created_at": str, "start_date": str,
         "end_date": str, "min_samples": int, "confidence_level": float, "metric": str,
         "shadow": int, "winner": str, "stopped_at": str},
        pk="id",
        defaults={"shadow": 0},
    )
    db["experiments"].create_index(["name"], unique=True)
    db["experiment_arms"].create(
        {"experiment_id": int, "arm": str, "model_id": str, "traffic_share": float},
        pk=("experiment_id", "arm"),
        foreign_keys=[("experiment_id", "experiments", "id"), ("model_id", "models", "model_id")],
    )
    db["daily_metrics"].create(
        {"model_id": str, "date": str, "n_predictions": int, "mae": float, "rmse": float,
         "mape": float, "directional_accuracy": float, "naive_mae": float, "latency_p50": float,
         "latency_p95": float, "latency_p99": float},
        pk=("model_id", "date"),
    )
    db["alerts"].create(
        {"id": int, "dedup_key": str, "model_id": str, "kind": str, "severity": str, "message": str,
         "created_at": str, "acknowledged_at": str},
        pk="id",
    )
    db["alerts"].create_index(["dedup_key"], unique=True)
    db["retrain_jobs"].create(
        {"id": int, "model_id": str, "trigger": str, "status": str, "challenger_id": str,
         "decision": str, "details_json": str, "created_at": str, "finished_at": str},
        pk="id",
    )
    db["audit_log"].create(
        {"id": int, "at": str, "actor": str, "action": str, "target": str, "details_json": str},
        pk="id",
    )
    db["audit_log"].create_index(["target"])


def _m002_served_predictions_unique(db: sqlite_utils.Database) -> None:
    """A served prediction is evidence: one row per (symbol, as_of, model, experiment, arm), served or shadow.

    Re-viewing a page or replaying a day used to log another served row for the same request, which
    inflated A/B sample counts and live metrics. Duplicates already stored are removed first (the
    earliest row, the one first answered, is kept), then a unique index makes the database refuse
    new ones. NULL experiment/arm (requests outside a test) are mapped to -1 / '' so they compare
    equal (NULLs never do in a unique index); `served` is part of the key so an arm's served row and
    its shadow row on another request of the same day can both exist, each at most once.
    """
    removed = db.execute(
        "DELETE FROM predictions WHERE id NOT IN (SELECT MIN(id) FROM predictions "
        "GROUP BY symbol, as_of, model_id, ifnull(experiment_id, -1), ifnull(arm, ''), served)"
    ).rowcount
    db.execute(
        "CREATE UNIQUE INDEX predictions_one_row_per_request ON predictions "
        "(symbol, as_of, model_id, ifnull(experiment_id, -1), ifnull(arm, ''), served)"
    )
    log.log(logging.WARNING if removed else logging.INFO,
            "migration 002: removed %d duplicate prediction row(s) (kept the earliest of each request)", removed)


def _m003_retrain_job_owner(db: sqlite_utils.Database) -> None:
    """Who runs a retrain job and when it last reported, so a job whose process died is told from a live one.

    owner_start is the owner's process start time (Linux /proc), so a reused pid is not taken for the
    owner. Columns already present are skipped: the migration may run on a database that has them.
    """
    present = set(db["retrain_jobs"].columns_dict)
    for name, kind in (("owner_pid", "INTEGER"), ("owner_host", "TEXT"), ("owner_start", "TEXT"), ("heartbeat_at", "TEXT")):
        if name not in present:
            db.execute(f"ALTER TABLE retrain_jobs ADD COLUMN {name} {kind}")


def _m004_drift_watch(db: sqlite_utils.Database) -> None:
    """The sequential detectors' tables (owner: core/drift_watch.py): each model's calibrated profile, and one
    state row per (model, detector, day) so history can be plotted and a restart resumes from the last day."""
    db["drift_profiles"].create({"model_id": str, "profile_json": str, "arl_days": float, "created_at": str},
                                pk="model_id", foreign_keys=[("model_id", "models", "model_id")])
    db["drift_watch_state"].create(
        {"model_id": str, "detector": str, "as_of": str, "state_json": str, "statistic": float, "threshold": float,
         "alarm": int, "onset_day": str},
        pk=("model_id", "detector", "as_of"), foreign_keys=[("model_id", "models", "model_id")])
    db["drift_watch_state"].create_index(["model_id", "as_of"])


def _m005_scale_indexes(db: sqlite_utils.Database) -> None:
    """Indexes that match the big reads, so no page load scans the prediction log (issue 16, checked by
    tests/test_scale.py with EXPLAIN QUERY PLAN).

    Per-model reads of the log (live error, Monitoring, the cycle's metrics and drift steps) filter on
    `as_of`, the old index is on `target_date`; the actuals backfill looks for the few unscored rows of
    a ticker (a partial index holds only those); the open alerts, the last scheduler run, a model's
    retrain jobs and the deployed models each get the index their filter needs.
    """
    for statement in (
        "CREATE INDEX IF NOT EXISTS predictions_model_as_of ON predictions (model_id, as_of)",
        "CREATE INDEX IF NOT EXISTS predictions_as_of ON predictions (as_of)",  # a window across every ticker
        "CREATE INDEX IF NOT EXISTS predictions_unscored ON predictions (symbol, target_date) WHERE actual_close IS NULL",
        "CREATE INDEX IF NOT EXISTS alerts_open ON alerts (acknowledged_at, created_at)",
        "CREATE INDEX IF NOT EXISTS alerts_model ON alerts (model_id, created_at)",
        "CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log (action)",
        "CREATE INDEX IF NOT EXISTS retrain_jobs_model ON retrain_jobs (model_id, status)",
        "CREATE INDEX IF NOT EXISTS retrain_jobs_challenger ON retrain_jobs (challenger_id)",
        "CREATE INDEX IF NOT EXISTS retrain_jobs_status ON retrain_jobs (status)",
        "CREATE INDEX IF NOT EXISTS models_status ON models (status)",
    ):
        db.execute(statement)


def _m006_drift_watch_resume(db: sqlite_utils.Database) -> None:
    """The sequential detectors' full state moves out of the daily rows (owner: core/drift_watch.py): one row per
    model, rewritten in place each day, holds the packed state after its latest stored day; the daily rows keep
    the compact statistics and, on alarm days only, the alarm's details. Rows without an alarm drop the full
    state they held (a restart resumes from `drift_watch_resume`, or recomputes the days when it is missing)."""
    db["drift_watch_resume"].create({"model_id": str, "as_of": str, "state": bytes}, pk="model_id",
                                    foreign_keys=[("model_id", "models", "model_id")])
    db.execute("UPDATE drift_watch_state SET state_json = NULL WHERE alarm = 0")


DIRECTION_METRIC_COLUMNS = ("accuracy", "brier", "log_loss", "always_up_accuracy", "always_up_brier", "always_up_log_loss",
                            "persistence_accuracy", "persistence_brier", "persistence_log_loss")


def _m007_direction_serving(db: sqlite_utils.Database) -> None:
    """Direction models are served (issue 15): a served P(up) is a prediction row with `p_up` (its price
    columns stay NULL), scored in classifier terms in `daily_metrics` beside the two baselines; and a ticker
    may have one deployed model per kind (a price model and a direction model), which a partial unique
    index makes the database enforce (two deploys racing can never leave two of one kind deployed)."""
    if "p_up" not in db["predictions"].columns_dict:
        db.execute("ALTER TABLE predictions ADD COLUMN p_up REAL")
    present = set(db["daily_metrics"].columns_dict)
    for name in DIRECTION_METRIC_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE daily_metrics ADD COLUMN {name} REAL")
    # the app never leaves two deployed models of one kind (deploy archives the previous one); a database edited by
    # hand might: the one deployed last (audit log) stays, the others are archived, said in the log and on the row
    extra = db.execute(
        "SELECT model_id FROM (SELECT m.model_id, ROW_NUMBER() OVER (PARTITION BY m.symbol, m.model_type = 'direction' "
        "ORDER BY (SELECT MAX(a.id) FROM audit_log a WHERE a.target = m.model_id AND a.action IN ('deploy', 'rollback')) "
        "DESC NULLS LAST, m.created_at DESC) AS rank FROM models m WHERE m.status = 'deployed') WHERE rank > 1").fetchall()
    for (model_id,) in extra:
        db.execute("UPDATE models SET status = 'archived', reason = COALESCE(reason || '; ', '') || ? WHERE model_id = ?",
                   ["archived by migration 007: another model of its ticker and kind was deployed later", model_id])
        log.warning("migration 007: archived %s (another model of its ticker and kind was deployed later)", model_id)
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS models_one_deployed_per_kind ON models "
               "(symbol, model_type = 'direction') WHERE status = 'deployed'")


def _m008_drift_report_streams(db: sqlite_utils.Database) -> None:
    """Stored drift reports keep the last 90 trading days of their error stream and the detections among them
    (core.drift_report.STREAM_KEEP_DAYS: what the Drift page draws), as new reports do; each held the whole
    stream since deployment (~118 KB on a long-deployed model). Only reports with a longer stream are rewritten."""
    keep, rewritten = 90, 0
    rows = db.execute("SELECT id, report_json FROM drift_checks WHERE NOT json_valid(report_json) "  # NaN: read in Python
                      "OR json_array_length(report_json, '$.streaming.stream.date') > ?", [keep]).fetchall()
    for row_id, text in rows:
        report = json.loads(text)
        streaming = report.get("streaming") or {}
        stream = streaming.get("stream") or {}
        dates = stream.get("date") or []
        if len(dates) <= keep:
            continue
        since = dates[-keep]
        streaming["stream"] = {"date": dates[-keep:], "value": (stream.get("value") or [])[-keep:]}
        for key in ("adwin", "page_hinkley"):
            streaming[key] = [d for d in streaming.get(key) or [] if d >= since]
        db.execute("UPDATE drift_checks SET report_json = ? WHERE id = ?", [json.dumps(report), row_id])
        rewritten += 1
    log.info("migration 008: %d drift report(s) trimmed to their last %d days of error stream", rewritten, keep)


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m001_initial, _m002_served_predictions_unique, _m003_retrain_job_owner, _m004_drift_watch,
    _m005_scale_indexes, _m006_drift_watch_resume, _m007_direction_serving, _m008_drift_report_streams,
]
