"""Retrain jobs: owns `retrain_jobs`; creates and updates jobs, records their owner and heartbeat, reconciles dead ones.

A running job records its owner (pid, host, process start) and a heartbeat at each progress step,
and its challenger the moment it is registered; `reconcile` marks "interrupted" every running job
whose process is gone, moves aside model folders a kill left without a registry row, and names
registered models whose artifacts a kill left incomplete (rewriting them through a callback). The decisions that create jobs are `core.retrain`'s.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from core.config import get_settings
from core.features import build_features, check_feature_frame
from core.market import load_prices
from core.model_files import MODEL_CARD, model_folder
from core.registry import load_model
from core.store import audit, get_db, to_json, transaction, utc_now, where_clause

log = logging.getLogger(__name__)

# The approval queue: jobs awaiting approval, and approved runs that were interrupted (they can be retried).
QUEUED = ("(j.status IN ('awaiting_approval', 'awaiting_deploy') OR (j.status = 'interrupted' "
          "AND json_extract(j.details_json, '$.approved_by') IS NOT NULL))")
# A challenger between its gate and its fate (core.challenger): in a shadow A/B test, or a winner awaiting approval.
CHALLENGER_OPEN = ("testing", "awaiting_deploy")
JOB_STALE_SECONDS = 600      # another host's running job silent this long is taken as dead
ORPHAN_GRACE_SECONDS = 600   # a model folder without a row must be this old before it counts as left over
MAX_ORPHANS = 2  # a kill leaves one folder; more means the folder and the database do not belong together
ORPHANED_DIR = ".orphaned"  # where left-over folders are moved (never deleted: nothing is lost)


class RetrainError(ValueError):
    """A retrain that cannot be done as asked, or that failed (the registry is left unchanged)."""



def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


# --- jobs ---------------------------------------------------------------------------------------------

def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), None if unknown or a zombie.

    Recorded with the pid so a pid reused after a restart (containers reuse low pids) is not taken for
    the job's owner.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _owner_alive(pid: int, start: str | None) -> bool:
    """Whether the process that claimed a job still runs on this host (a zombie or a reused pid does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if not Path("/proc/self/stat").exists():
        return True  # no /proc: the pid exists, that is all we can know
    current = _process_start(pid)
    return current is not None and (start is None or current == start)


def _owner() -> dict[str, Any]:
    """This process as a job's owner, with a fresh heartbeat."""
    pid = os.getpid()
    return {"owner_pid": pid, "owner_host": socket.gethostname(), "owner_start": _process_start(pid),
            "heartbeat_at": utc_now()}


def owned_here(job: dict) -> bool:
    return job["status"] == "running" and (job["owner_pid"], job["owner_host"]) == (os.getpid(), socket.gethostname())


def create_job(db: sqlite_utils.Database, model_id: str, trigger: str, status: str, decision: str,
                details: dict, finished: bool) -> int:
    with transaction(db):
        job_id = db["retrain_jobs"].insert({
            "model_id": model_id, "trigger": trigger, "status": status, "challenger_id": None,
            "decision": decision, "details_json": to_json(details), "created_at": utc_now(),
            "finished_at": utc_now() if finished else None, **(_owner() if status == "running" else {}),
        }).last_pk
        audit(db, details.get("actor", "scheduler"), f"retrain_{status}", model_id,
              {"job_id": job_id, "trigger": trigger, "decision": decision, "as_of": details.get("as_of")})
    return job_id


def update_job(db: sqlite_utils.Database, job_id: int, status: str, decision: str, details: dict | None = None,
                challenger_id: str | None = None, finished: bool = True, actor: str = "scheduler") -> None:
    """Update a job and audit the step; joins the caller's transaction when there is one.

    Setting "running" makes this process the job's owner; other states keep the last owner on record.
    """
    with transaction(db):
        job = get_job(job_id, db=db)
        merged = {**job["details"], **(details or {})}
        db.execute(
            "UPDATE retrain_jobs SET status = ?, decision = ?, details_json = ?, challenger_id = COALESCE(?, challenger_id), "
            "finished_at = ? WHERE id = ?",
            [status, decision, to_json(merged), challenger_id, utc_now() if finished else None, job_id],
        )
        if status == "running":
            db["retrain_jobs"].update(job_id, _owner())
        audit(db, actor, f"retrain_{status}", job["model_id"],
              {"job_id": job_id, "decision": decision, "challenger_id": challenger_id or job["challenger_id"]})


def record_challenger(db: sqlite_utils.Database, job_id: int, challenger_id: str, actor: str = "scheduler") -> None:
    """Put the challenger on its job the moment it is registered, before its artifacts are written: a
    process killed after that leaves a job that names the model it made (never "challenger: none")."""
    with transaction(db):
        job = get_job(job_id, db=db)
        db.execute("UPDATE retrain_jobs SET challenger_id = ? WHERE id = ?", [challenger_id, job_id])
        audit(db, actor, "retrain_challenger_registered", job["model_id"],
              {"job_id": job_id, "challenger_id": challenger_id})


def note_progress(db: sqlite_utils.Database, job_id: int, details: dict) -> None:
    """Merge `details` into a job without changing its state or auditing: a shadow test's daily look
    (the audit trail keeps the decisions, not every look)."""
    with transaction(db):
        merged = {**get_job(job_id, db=db)["details"], **details}
        db.execute("UPDATE retrain_jobs SET details_json = ? WHERE id = ?", [to_json(merged), job_id])


def open_challenger(db: sqlite_utils.Database, symbol: str, watched: bool = False) -> dict | None:
    """The job of `symbol`'s challenger in a shadow test or awaiting its deploy approval (`watched`: or deployed
    and in its validation window), or None: one challenger per ticker at a time."""
    statuses = (*CHALLENGER_OPEN, *(("validating",) if watched else ()))
    row = db.execute(
        "SELECT j.id FROM retrain_jobs j JOIN models m ON m.model_id = j.model_id WHERE m.symbol = ? AND j.status IN "
        f"({', '.join('?' * len(statuses))}) ORDER BY j.id DESC LIMIT 1", [symbol, *statuses]).fetchone()
    return get_job(row[0], db=db) if row else None


def heartbeat(db: sqlite_utils.Database, job_id: int) -> None:
    """Record that this job's process is alive; RetrainError if the job is no longer this process's to run.

    A compare-and-set on (status, owner): once `reconcile` has marked the job interrupted (or a Retry
    gave it to another process), this run stops instead of deploying over it.
    """
    with transaction(db):
        changed = db.execute(
            "UPDATE retrain_jobs SET heartbeat_at = ? WHERE id = ? AND status = 'running' AND owner_pid = ? "
            "AND owner_host = ?", [utc_now(), job_id, os.getpid(), socket.gethostname()]).rowcount
    if not changed:
        raise RetrainError(f"Retrain job {job_id} was closed by another process ({get_job(job_id, db=db)['status']}); "
                           "this run stopped without deploying.")


def interrupt(db: sqlite_utils.Database, job: dict, why: str, actor: str) -> str:
    """Mark a running job "interrupted" with what happened and what to do next; returns the decision."""
    approved = job["details"].get("approved_by") is not None
    made = (f" Its challenger {job['challenger_id']} was registered and stays a candidate (check its artifacts "
            "on Model Management)." if job.get("challenger_id") else "")
    decision = (f"interrupted: {why}; nothing was deployed.{made} "
                + ("The approval is back in the queue: Retry it on Model Management."
                   if approved else "Retrain again when needed (an interrupted job does not start a cooldown)."))
    update_job(db, job["id"], "interrupted", decision, actor=actor)
    return decision


def get_job(job_id: int, db: sqlite_utils.Database | None = None) -> dict:
    db = db or get_db()
    rows = list(db.query("SELECT * FROM retrain_jobs WHERE id = ?", [job_id]))
    if not rows:
        raise RetrainError(f"No retrain job with id {job_id}.")
    return {**rows[0], "details": json.loads(rows[0]["details_json"] or "{}")}


def jobs_frame(symbol: str | None = None, status: str | None = None, limit: int = 500,
               db: sqlite_utils.Database | None = None, queued: bool = False) -> pd.DataFrame:
    """Retrain jobs newest first with ticker and as_of, for the pages (`queued`: the approval queue only)."""
    db = db or get_db()
    where, params = where_clause(("m.symbol = ?", symbol), ("j.status = ?", status), (QUEUED, queued))
    return pd.read_sql_query(
        "SELECT j.id, json_extract(j.details_json, '$.as_of') AS as_of, m.symbol, j.model_id, j.trigger, j.status, "
        f"j.decision, j.challenger_id, j.created_at, j.finished_at FROM retrain_jobs j LEFT JOIN models m "
        f"ON m.model_id = j.model_id {where} ORDER BY j.id DESC LIMIT ?", db.conn, params=[*params, limit],
    )


def approval_queue(db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Jobs awaiting approval and interrupted approvals (status "interrupted": offer a Retry)."""
    return jobs_frame(queued=True, db=db)


def is_queued(db: sqlite_utils.Database, job_id: int) -> bool:
    return db.execute(f"SELECT 1 FROM retrain_jobs j WHERE j.id = ? AND {QUEUED}", [job_id]).fetchone() is not None


# --- reconcile: what a killed process left behind -----------------------------------------------------

def _age_seconds(timestamp: str) -> float:
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (datetime.now(timezone.utc) - then).total_seconds()


def _why_dead(job: dict, stale_seconds: float) -> str | None:
    """Why a running job's process is gone, or None while it may still be running."""
    pid, host = job["owner_pid"], job["owner_host"]
    if host == socket.gethostname() and pid:
        return None if _owner_alive(pid, job["owner_start"]) else f"its process (pid {pid}) ended before finishing"
    age = _age_seconds(job["heartbeat_at"] or job["created_at"])
    if age <= stale_seconds:
        return None
    owner = f"pid {pid} on {host}" if host else "its process"
    return f"no heartbeat from {owner} for {age / 60:.0f} minutes (limit {stale_seconds / 60:.0f})"


def _dead_jobs(db: sqlite_utils.Database, stale_seconds: float) -> list[tuple[dict, str]]:
    running = [get_job(r[0], db=db) for r in db.execute("SELECT id FROM retrain_jobs WHERE status = 'running'").fetchall()]
    return [(job, why) for job in running if (why := _why_dead(job, stale_seconds))]


def reconcile_jobs(db: sqlite_utils.Database | None = None, stale_seconds: float = JOB_STALE_SECONDS) -> list[str]:
    """Mark "interrupted" every running job whose process is gone; one line per job marked.

    On this host a job is dead when its owner pid is not alive (or is another process now); a job of
    another host when its heartbeat is older than `stale_seconds`. Decided again inside the write
    transaction, so two reconcilers never both act and a live job is never touched.
    """
    db = db or get_db()
    if not _dead_jobs(db, stale_seconds):  # the common case, without taking the write lock
        return []
    lines = []
    with transaction(db):
        for job, why in _dead_jobs(db, stale_seconds):
            lines.append(f"Retrain job {job['id']} ({job['model_id']}) {interrupt(db, job, why, actor='reconcile')}")
    for line in lines:
        log.warning(line)
    return lines


def _mtime(path: Path) -> float:
    """Last modification time; 0 for a file removed meanwhile (another reconcile, an atomic rename)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _last_modified(folder: Path) -> float:
    return max([_mtime(folder), *(_mtime(p) for p in folder.rglob("*"))])


def reconcile_model_folders(db: sqlite_utils.Database | None = None,
                            grace_seconds: float = ORPHAN_GRACE_SECONDS) -> list[str]:
    """Move aside model folders without a registry row, left by a kill between writing files and committing.

    Not adopted: the row's metrics, parameters, lineage and reason exist only in the rolled back
    transaction. Not deleted either: they go to `models/.orphaned/`, so a mistake loses nothing. Only
    folders unchanged for `grace_seconds` are candidates, and the row check is repeated under the write
    lock, which `register` holds from its first file to its commit: a registration in progress is never
    touched. More than `MAX_ORPHANS` unknown folders, or unknown folders beside an empty registry, mean
    MLSA_MODELS_DIR and MLSA_DB_PATH point at different installations: then nothing moves, and the
    returned line says so. Stray temporary files (`.tmp-*`) are removed.
    """
    db = db or get_db()
    root = Path(get_settings().models_dir)
    if not root.is_dir():
        return []
    now = time.time()
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    known = {r[0] for r in db.execute("SELECT model_id FROM models").fetchall()}
    orphans = [p for p in folders if p.name not in known and now - _last_modified(p) > grace_seconds]
    temps = [p for p in root.glob("*/**/.tmp-*") if now - _mtime(p) > grace_seconds]
    if not orphans and not temps:
        return []
    if len(orphans) > MAX_ORPHANS or (orphans and not known):
        line = (f"{root} holds {len(orphans)} model folder(s) that the database {get_settings().db_path} does not know "
                f"(e.g. {orphans[0].name}): they look like another database's models, so nothing was moved. Point "
                "MLSA_MODELS_DIR and MLSA_DB_PATH at the same installation.")
        log.warning(line)
        return [line]
    lines = []
    with transaction(db):
        known = {r[0] for r in db.execute("SELECT model_id FROM models").fetchall()}
        for folder in orphans:
            if folder.name not in known:
                target = root / ORPHANED_DIR / f"{folder.name}-{int(now)}"
                target.parent.mkdir(exist_ok=True)
                folder.rename(target)
                audit(db, "reconcile", "move_orphan_folder", folder.name,
                      {"path": str(folder), "moved_to": str(target),
                       "why": "no registry row: a registration was killed before its commit"})
                lines.append(f"Moved {folder} to {target}: it has no registry row (a registration was killed before "
                             "it finished).")
        for temp in temps:
            temp.unlink(missing_ok=True)
            lines.append(f"Removed the unfinished temporary file {temp}.")
    for line in lines:
        log.warning(line)
    return lines


def incomplete_artifacts(db: sqlite_utils.Database | None = None,
                         grace_seconds: float = ORPHAN_GRACE_SECONDS) -> list[str]:
    """Registered models whose explainability artifacts were not finished (no model card, the file
    `core.model_card` writes last), e.g. a retrain killed between registering its challenger and writing
    them. A model whose folder changed within `grace_seconds` may still be being written and is left
    out, unless it is the challenger of a job that is no longer running (its writer is gone)."""
    db = db or get_db()
    done_with = {r[0] for r in db.execute(
        "SELECT challenger_id FROM retrain_jobs WHERE challenger_id IS NOT NULL AND status != 'running'").fetchall()}
    running = {r[0] for r in db.execute(
        "SELECT challenger_id FROM retrain_jobs WHERE challenger_id IS NOT NULL AND status = 'running'").fetchall()}
    now = time.time()
    found = []
    for (model_id,) in db.execute("SELECT model_id FROM models ORDER BY created_at, model_id").fetchall():
        folder = model_folder(model_id)
        if (folder / MODEL_CARD).exists() or model_id in running:
            continue
        if model_id in done_with or not folder.is_dir() or now - _last_modified(folder) > grace_seconds:
            found.append(model_id)
    return found


def reconcile_artifacts(db: sqlite_utils.Database | None = None, rewrite: Callable[[str], Any] | None = None,
                        grace_seconds: float = ORPHAN_GRACE_SECONDS) -> list[str]:
    """One line per registered model with incomplete artifacts (`incomplete_artifacts`), naming it.

    With `rewrite` (a callback from a higher layer: `core.lifecycle.write_artifacts`), each is written
    again and the line says so, or says why it failed; without it the line says how to do it.
    """
    db = db or get_db()
    lines = []
    for model_id in incomplete_artifacts(db, grace_seconds):
        if rewrite is None:
            lines.append(f"{model_id} is registered but its explainability artifacts (importance, SHAP figure, model "
                         "card) are incomplete: their writing was interrupted. Open it on Model Management and "
                         "rewrite them (Explainability), or run the daily cycle, which rewrites them.")
            continue
        try:
            rewrite(model_id)
        except Exception as exc:  # reported, never raised: reconcile must not stop the cycle or a page
            lines.append(f"{model_id}: its explainability artifacts are incomplete and could not be written again "
                         f"({type(exc).__name__}: {exc}).")
            continue
        with transaction(db):
            audit(db, "reconcile", "rewrite_artifacts", model_id,
                  {"why": "registered, but the writing of its artifacts was interrupted"})
        lines.append(f"{model_id}: its explainability artifacts were incomplete (their writing was interrupted); "
                     "written again.")
    for line in lines:
        log.warning(line)
    return lines


def reconcile(db: sqlite_utils.Database | None = None, rewrite_artifacts: Callable[[str], Any] | None = None,
              grace_seconds: float = ORPHAN_GRACE_SECONDS) -> list[str]:
    """Close what killed processes left: running jobs without a process, orphan model folders, and
    registered models whose artifacts were left incomplete (named; rewritten through `rewrite_artifacts`
    when the caller passes it: writing them belongs to a layer above this one).

    Runs at the start of the daily cycle and when Model Management loads; `reconcile_jobs` also runs
    before cooldowns and approvals are evaluated. Returns one line per repair or finding (empty:
    nothing to do).
    """
    db = db or get_db()
    return (reconcile_jobs(db) + reconcile_model_folders(db, grace_seconds=grace_seconds)
            + reconcile_artifacts(db, rewrite_artifacts, grace_seconds=grace_seconds))


# --- counterfactual predictions and the gate ----------------------------------------------------------


# --- what a model would have predicted on past days (the gate, the validation window, a decision's worth) ---

def counterfactual_predictions(model_id: str, days, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """What `model_id` predicts (price) for the close after each of `days`, beside that actual close.

    The same features and arithmetic as the serving path, for days in the past: used to score a
    champion on a challenger's holdout and a previous champion on the validation window.
    """
    db = db or get_db()
    loaded = load_model(model_id, db=db)
    days = pd.DatetimeIndex(days)
    prices = load_prices(loaded.symbol, start=days.min() - pd.Timedelta(days=450), db=db)
    features = build_features(prices, loaded.symbol, dropna=False)
    missing = days.difference(features.index)
    if len(missing):
        raise RetrainError(f"{loaded.symbol}: no prices on {', '.join(_day(d) for d in missing[:3])}.")
    rows = features.loc[days]
    predicted = np.asarray(loaded.predict_returns(check_feature_frame(rows, loaded.feature_columns)))
    close = rows["close"].to_numpy()
    return pd.DataFrame({"last_close": close, "predicted_close": close * np.exp(predicted),
                         "actual_close": close * np.exp(rows["target"].to_numpy())}, index=days)
