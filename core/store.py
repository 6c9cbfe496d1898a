"""The SQLite database: connections (WAL, busy timeout, foreign keys), the schema and its migrations.

One file holds all state (`MLSA_DB_PATH`, default `data/app.db`). Each thread gets its own
connection (Streamlit runs every session in its own thread; sqlite3 connections must not be shared
across threads). Multi-statement writes go through `transaction()`, which takes the write lock up
front (`BEGIN IMMEDIATE`) so concurrent writers queue on the busy timeout instead of failing.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from core.config import get_settings

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
_local = threading.local()
_migrate_lock = threading.Lock()


class StoreError(RuntimeError):
    """The database could not be opened or is from an incompatible version of the app."""


def utc_now() -> str:
    """Wall-clock timestamps are only for bookkeeping (created_at); logic uses `as_of` dates."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, sort_keys=True)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def get_db(path: str | Path | None = None) -> sqlite_utils.Database:
    """This thread's connection to the database at `path` (default: settings), migrated on first use."""
    resolved = str(Path(path or get_settings().db_path).resolve())
    connections: dict[str, sqlite_utils.Database] = getattr(_local, "connections", None) or {}
    _local.connections = connections
    db = connections.get(resolved)
    if db is None:
        db = _open(resolved)
        connections[resolved] = db
    return db


def close_all() -> None:
    """Close this thread's connections (tests switch databases between sessions)."""
    for db in (getattr(_local, "connections", None) or {}).values():
        db.close()
    _local.connections = {}


def _open(path: str) -> sqlite_utils.Database:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"Cannot open the database at {path}: {exc}. Move the file away to start fresh.") from exc
    db = sqlite_utils.Database(conn)
    with _migrate_lock:
        migrate(db)  # a no-op (one PRAGMA read) when the schema is current
    return db


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """All-or-nothing writes. Nested calls become savepoints through sqlite-utils' `atomic()`."""
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    else:
        db.conn.execute("COMMIT")


def where_clause(*conditions: tuple[str, Any]) -> tuple[str, list]:
    """`WHERE ...` and its parameters from (fragment, value) pairs, skipping the filters not given.

    A pair whose value is None, empty or False is left out; a fragment with `?` binds its value, one
    without (e.g. ``("served = 1", served_only)``) is added as written. Values are never formatted in.

    >>> where_clause(("symbol = ?", "AAPL"), ("status = ?", None), ("served = 1", True))
    ('WHERE symbol = ? AND served = 1', ['AAPL'])
    """
    used = [(fragment, value) for fragment, value in conditions if value is not None and value is not False and value != ""]
    if not used:
        return "", []
    return "WHERE " + " AND ".join(f for f, _ in used), [v for f, v in used if "?" in f]


def audit(db: sqlite_utils.Database, actor: str, action: str, target: str, details: dict | None = None) -> None:
    """Append to the audit log; call inside the transaction of the change it records."""
    db["audit_log"].insert(
        {"at": utc_now(), "actor": actor, "action": action, "target": target, "details_json": to_json(details or {})}
    )


def audit_entries(db: sqlite_utils.Database | None = None, target: str | None = None, limit: int = 200) -> list[dict]:
    db = db or get_db()
    where, params = ("WHERE target = ?", [target]) if target else ("", [])
    return list(db.query(f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ?", [*params, limit]))


# --- schema -----------------------------------------------------------------------------------------
# Migrations run in order; PRAGMA user_version records how many have been applied. Append, never edit.

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


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m001_initial, _m002_served_predictions_unique, _m003_retrain_job_owner,
]


def schema_version(db: sqlite_utils.Database) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite_utils.Database) -> None:
    """Apply pending migrations, each in its own transaction with the version bump."""
    current = schema_version(db)
    if current > len(MIGRATIONS):
        raise StoreError(
            f"The database is at schema version {current} but this app knows only {len(MIGRATIONS)}: "
            "it was written by a newer version. Upgrade the app or point MLSA_DB_PATH elsewhere."
        )
    for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
        with transaction(db):
            step(db)
            db.execute(f"PRAGMA user_version = {number}")
        log.info("database migrated to schema version %d (%s)", number, step.__name__)
