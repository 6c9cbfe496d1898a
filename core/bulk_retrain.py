"""Bulk retraining: many tickers' deployed models retrained as one batch, each through Retrain Now's gated path.

Every ticker goes through `lifecycle.retrain_now`, unchanged: its own job in `retrain_jobs`, the validation gate,
the challenger stage (a shadow A/B test when MLSA_CHALLENGER_AB_TEST is on) and its approval rules. What the batch
adds is where the training runs: with MLSA_DASK_SCHEDULER set, every ticker's training is submitted at once as a
task with plain inputs (`retrain.training_task`: prices, params, settings without secrets), so the cluster fits
them side by side while this process gates, registers and deploys each in turn as its result arrives; without
it each ticker trains here, one after the other, as a Retrain Now click would. Only this process writes.

A ticker whose training task never returns (its worker died more often than the scheduler retries) has its job
marked "failed" with the reason and nothing registered; the other tickers go on.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import sqlite_utils

from core import lifecycle
from core.cluster import executor
from core.drift import check_within_data, data_ends
from core.registry import RegistryError, list_models
from core.retrain import training_task
from core.retrain_jobs import RetrainError, open_challenger
from core.store import get_db

log = logging.getLogger(__name__)
Report = Callable[[str], None]


def _plan(symbols: list[str] | None, as_of, db: sqlite_utils.Database) -> tuple[list[dict], list[dict]]:
    """(the champions to retrain, each with its day; the tickers refused before any training, each with why).

    A ticker's day is min(`as_of`, its last data day) ("today" is the data's, never the clock); `as_of` after
    every ticker's data raises BeyondDataError before anything is trained or written."""
    deployed = {m["symbol"]: m for m in list_models(status="deployed", db=db)}
    wanted = sorted(deployed) if not symbols else sorted({s.strip().upper() for s in symbols if s.strip()})
    refused = [{"symbol": s, "status": "refused", "decision": f"No model is deployed for {s}: deploy one before "
                "retraining it."} for s in wanted if s not in deployed]
    champions = [deployed[s] for s in wanted if s in deployed]
    ends = data_ends([m["symbol"] for m in champions], db=db)
    requested = check_within_data(as_of, ends) if as_of is not None else None
    planned = []
    for champion in champions:
        end = ends[champion["symbol"]]
        day = f"{min(requested, end) if requested is not None else end:%Y-%m-%d}"
        if (job := open_challenger(db, champion["symbol"])) is not None:  # one challenger per ticker: not trained
            refused.append({"symbol": champion["symbol"], "status": "refused",
                            "decision": f"{champion['symbol']}'s challenger {job['challenger_id']} (job {job['id']}) is "
                                        f"{job['status']}: one challenger per ticker at a time."})
        else:
            planned.append({**champion, "day": day})
    return planned, refused


def _line(result: dict) -> str:
    """One ticker's outcome in words (the decision already starts with the status when the gate rejected it)."""
    decision = result["decision"]
    said = decision if decision.startswith(result["status"]) else f"{result['status']}: {decision}"
    return f"{result['symbol']}" + (f" ({result['as_of']})" if result.get("as_of") else "") + f": {said}"


def retrain_all(symbols: list[str] | None = None, as_of=None, actor: str = "scheduler",
                db: sqlite_utils.Database | None = None, report: Report | None = None) -> dict[str, Any]:
    """Retrain the deployed model of each of `symbols` (None: every deployed ticker) on data up to `as_of`.

    Returns {"ran_on", "results": one dict per ticker (symbol, status, decision, job_id, challenger_id)}; a
    status is the job's ("validating" deployed, "testing", "rejected", "superseded"), "failed" (its job says
    why) or "refused" (nothing trained: no deployed model, or a challenger already open)."""
    db = db or get_db()
    say = report or (lambda _line: None)
    planned, results = _plan(symbols, as_of, db)
    last_job = db.execute("SELECT ifnull(MAX(id), 0) FROM retrain_jobs").fetchone()[0]
    with executor() as tasks:
        # on a cluster every training starts now, side by side; in process each trains when its turn comes
        handles = {m["symbol"]: training_task(tasks, m, m["day"], db) for m in planned} if tasks.remote else {}
        for champion in planned:
            symbol = champion["symbol"]
            try:
                outcome = lifecycle.retrain_now(symbol, champion["day"], actor=actor, db=db,
                                                trained_by=handles.get(symbol))
                result = {"status": outcome["status"], "decision": outcome["decision"], "job_id": outcome["job_id"],
                          "challenger_id": outcome["challenger_id"]}
            except (RetrainError, RegistryError) as exc:  # its job is closed as failed; the others go on
                job = db.execute("SELECT id, challenger_id FROM retrain_jobs WHERE model_id = ? AND id > ? "
                                 "ORDER BY id DESC LIMIT 1", [champion["model_id"], last_job]).fetchone()  # this batch's
                result = {"status": "failed", "decision": str(exc), "job_id": job[0] if job else None,
                          "challenger_id": job[1] if job else None}  # registered before it failed: a candidate
            results.append({"symbol": symbol, "champion_id": champion["model_id"], "as_of": champion["day"], **result})
            say(_line(results[-1]))
        ran_on = tasks.where
    for refusal in results[:len(results) - len(planned)]:
        say(_line(refusal))
    log.info("bulk retrain of %d ticker(s) on %s: %s", len(results), ran_on, dict(Counter(r["status"] for r in results)))
    return {"ran_on": ran_on, "results": sorted(results, key=lambda r: r["symbol"])}
