"""Retraining decisions (jobs stored through `core.retrain_jobs`, which owns `retrain_jobs`): triggers, the five safeguards, the validation gate, the validation window, rollback.

Automatic path (`auto_retrain`, called by the daily cycle after the drift check), each safeguard a
recorded decision in `retrain_jobs` and `audit_log`:
1. `MLSA_ENABLE_AUTO_RETRAIN` must be on (manual "Retrain Now" always works);
2. the trigger must hold on `MLSA_RETRAIN_CONFIRMATIONS` (3) consecutive drift checks;
3. no automatic retrain of the ticker within `MLSA_RETRAIN_COOLDOWN_DAYS` (7) days of the last one;
4. the validation gate: on the last `HOLDOUT_DAYS` trading days up to `as_of` that are out of sample
   for both models (the champion is never scored on closes it was trained on; fewer than
   `MIN_HOLDOUT_DAYS` such days and it is "too soon to judge"), the challenger's walk-forward MAE
   must beat the champion's by `MLSA_RETRAIN_MARGIN` (2%) and beat the naive baseline, else it is
   rejected and the job is "rejected";
5. critical drift waits in the approval queue (Model Management) for a person.
After a retrain deploys, the validation window (`MLSA_VALIDATION_WINDOW_DAYS`, 5 trading days)
compares the new model's MAE with what the previous champion would have scored on the same days
(both predict from the same features; only the new one is served) and rolls back when it is worse
by the margin.

Faults: a running job records its owner (pid, host, process start) and a heartbeat at each progress
step, and its challenger's id as soon as the challenger is registered (before its artifacts are
written); `reconcile` marks "interrupted" every running job whose process is gone, moves aside model
folders a kill left without a registry row and names (or, given a callback, rewrites) the artifacts
a kill left incomplete. A retrain deploys only if the champion it was gated
against is still deployed (compare-and-swap in `registry.deploy`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from core import training
from core.alerts import raise_alert
from core.cluster import Executor, Handle, executor, task_settings
from core.config import get_settings
from core.market import load_prices
from core.drift_report import should_retrain
from core.registry import ChampionChanged, RegistryError, deploy, deployed_model, get_model, reject, rollback
from core.retrain_jobs import (QUEUED, RetrainError, counterfactual_predictions, create_job, get_job, heartbeat, interrupt, is_queued, open_challenger,
                                owned_here, reconcile_jobs, record_challenger, update_job)
from core.store import get_db, transaction
from core.text import json_safe

log = logging.getLogger(__name__)

HOLDOUT_DAYS = 60
# fewer out-of-sample days than this and a 2% margin is decided by a handful of closes: the gate waits
MIN_HOLDOUT_DAYS = 20
AUTO_TRIGGERS = ("drift", "performance")
# Jobs that trained a challenger: they start the cooldown. "interrupted" is not one (a phantom never blocks).
TRAINED = ("running", "rejected", "validating", "validated", "rolled_back", "failed", "superseded", "testing",
           "awaiting_deploy", "archived")
Progress = Callable[[float, str], None]
# registers a trained challenger and returns its model_id: `core.lifecycle.register_with_artifacts`,
# passed in by the orchestration layer (registering also writes explainability artifacts, a layer above).
# Called with `on_registered=`, a function it must call with the model_id as soon as the model is registered,
# before the artifacts: the job records its challenger then, so a kill while writing them loses nothing.
RegisterChallenger = Callable[..., str]
# opens the shadow A/B test of a challenger that passed its gate and returns the experiment id:
# `core.challenger.open_test(challenger_id, champion_id, day, actor=, db=)`, passed in like `register_challenger`
# (None: the challenger is deployed directly after its gate, as before the challenger stage).
OpenTest = Callable[..., int]


@dataclass(frozen=True)
class GateResult:
    """The validation gate's verdict and the numbers behind it (all MAE in $ on the same holdout days)."""

    passed: bool
    challenger_mae: float
    champion_mae: float
    naive_mae: float
    margin: float
    holdout_days: int
    holdout_start: str
    holdout_end: str
    champion_in_sample_days: int  # of the last HOLDOUT_DAYS, days left out: the champion was trained on them
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"



def validation_gate(trained: training.TrainedModel, champion_id: str, margin: float,
                    db: sqlite_utils.Database | None = None) -> GateResult:
    """Challenger vs champion vs naive on the last HOLDOUT_DAYS days out of sample for BOTH models.

    The challenger's numbers come from its walk-forward (each day predicted by a fold fitted before it).
    The champion is scored only on days from its own train_end on: a day before it is a close the
    champion was fitted on, and its in-sample error there (a random forest's is far below its live
    error) made the gate reject challengers for the champion's memory, not its skill. Those days are
    left out and counted; with fewer than MIN_HOLDOUT_DAYS left the gate cannot judge and rejects
    ("too soon"), whatever the numbers.
    """
    db = db or get_db()
    champion_end = pd.Timestamp(get_model(champion_id, db=db)["train_end"])
    recent = trained.validation.iloc[-HOLDOUT_DAYS:]
    holdout = trained.validation[trained.validation.index >= champion_end].iloc[-HOLDOUT_DAYS:]
    in_sample = int(np.sum(recent.index < champion_end))
    if len(holdout) < MIN_HOLDOUT_DAYS:
        reason = (f"rejected: too soon to judge: {len(holdout)} day(s) are out of sample for the champion (trained to "
                  f"{_day(champion_end)}), at least {MIN_HOLDOUT_DAYS} needed")
        nan = float("nan")
        return GateResult(False, nan, nan, nan, margin, len(holdout), _day(champion_end), _day(recent.index.max()),
                          in_sample, reason)
    champion = counterfactual_predictions(champion_id, holdout.index, db=db)
    actual = holdout["actual_close"].to_numpy()
    challenger_mae = float(np.mean(np.abs(holdout["predicted_close"].to_numpy() - actual)))
    champion_mae = float(np.mean(np.abs(champion["predicted_close"].to_numpy() - actual)))
    naive_mae = float(np.mean(np.abs(holdout["last_close"].to_numpy() - actual)))
    beats_champion = challenger_mae <= champion_mae * (1 - margin)
    beats_naive = challenger_mae < naive_mae
    span = f" over {len(holdout)} days"
    if beats_champion and beats_naive:
        reason = f"passed: ${challenger_mae:.3f} vs champion ${champion_mae:.3f} (margin {margin:.0%}) and naive ${naive_mae:.3f}{span}"
    else:
        failed = [f"does not beat the champion by {margin:.0%} (${challenger_mae:.3f} vs ${champion_mae:.3f})"] if not beats_champion else []
        failed += [f"does not beat naive (${challenger_mae:.3f} vs ${naive_mae:.3f})"] if not beats_naive else []
        reason = "rejected: " + "; ".join(failed) + span
    return GateResult(beats_champion and beats_naive, challenger_mae, champion_mae, naive_mae, margin, len(holdout),
                      _day(holdout.index.min()), _day(holdout.index.max()), in_sample, reason)


# --- retrain ------------------------------------------------------------------------------------------

def _close_job(db: sqlite_utils.Database, job_id: int, status: str, decision: str, details: dict,
               challenger_id: str | None, actor: str, finished: bool = True) -> None:
    """Record a running job's outcome, only while it is still this process's job (joins the caller's transaction)."""
    with transaction(db):
        heartbeat(db, job_id)
        update_job(db, job_id, status, decision, details, challenger_id=challenger_id, finished=finished, actor=actor)


def training_task(tasks: Executor, champion: dict, day: str, db: sqlite_utils.Database,
                  progress: Progress | None = None) -> Handle:
    """The challenger's training as a task: plain inputs (the champion's ticker, type and params, its prices up to
    `day`, settings without secrets) on a cluster; in process it reads the database and reports `progress`."""
    return tasks.submit(
        f"retrain {champion['model_id']} {day}", training.train_model, champion["symbol"], champion["model_type"],
        train_end=day, params=champion["params"], prices=load_prices(champion["symbol"], end=day, db=db),
        **({"settings": task_settings()} if tasks.remote else {"db": db, "progress": progress}))


def retrain(champion_id: str, as_of, trigger: str = "manual", reason: str = "", actor: str = "ui",
            progress: Progress | None = None, job_id: int | None = None,
            db: sqlite_utils.Database | None = None, *, register_challenger: RegisterChallenger,
            open_test: OpenTest | None = None, trained_by: Handle | None = None) -> dict[str, Any]:
    """Train a challenger up to `as_of`, register it as the champion's child, gate it, deploy it if it passes.

    `trained_by`: the challenger's training already submitted (`training_task`, by `core.bulk_retrain`, which
    starts every ticker's training at once on a cluster); the rest of the path is the same.

    With `open_test` (and MLSA_CHALLENGER_AB_TEST on), a challenger that passes is not deployed: its
    shadow A/B test is opened and the job waits in "testing" (`core.challenger` decides it later).

    `job_id` is a job this process already claimed as running (`approve`); otherwise a job is created.
    Each progress step is a heartbeat. The challenger is deployed only if `champion_id` is still the
    deployed model (compare-and-swap); otherwise the job is "superseded" and says which model replaced
    it. Any failure marks the job "failed" and re-raises as RetrainError; whatever was registered stays
    a candidate and the champion stays deployed.
    """
    db = db or get_db()
    settings = get_settings()
    champion = get_model(champion_id, db=db)
    day = _day(as_of)
    details = {"as_of": day, "reason": reason, "actor": actor, "champion_id": champion_id}
    if job_id is None:
        job_id = create_job(db, champion_id, trigger, "running", "training the challenger", details, finished=False)
    notify = progress or (lambda _fraction, _text: None)

    def step(fraction: float, text: str) -> None:
        heartbeat(db, job_id)
        notify(fraction, text)

    challenger_id = None
    registered: list[str] = []  # the challenger's id as soon as it is registered, before its artifacts

    def on_registered(model_id: str) -> None:
        registered.append(model_id)
        record_challenger(db, job_id, model_id, actor=actor)  # a kill from here on leaves a job that names it

    try:
        step(0.05, f"Training a {champion['model_type']} challenger for {champion['symbol']} on data up to {day}")
        if trained_by is None:
            with executor() as tasks:  # on the Dask cluster when MLSA_DASK_SCHEDULER names one: plain inputs, result here
                trained = training_task(tasks, champion, day, db, lambda f, text: step(0.05 + 0.7 * f, text)).result()
        else:  # submitted by a bulk retrain with the others; a worker that died raises TaskFailed here: job "failed"
            trained = trained_by.result()
        step(0.8, "Validation gate: challenger vs champion vs naive on the recent holdout")
        gate = validation_gate(trained, champion_id, settings.retrain_margin, db=db)
        challenger_id = register_challenger(trained, parent_id=champion_id, actor=actor, db=db,
                                            reason=f"retrain ({trigger}) on {day}: {reason or 'requested'}",
                                            on_registered=on_registered)
        outcome = {"gate": json_safe(gate.to_dict()), "challenger_metrics": {"mae": trained.metrics["mae"], "skill": trained.metrics["skill"]}}
        result = {"job_id": job_id, "challenger_id": challenger_id, "gate": gate}
        if not gate.passed:
            with transaction(db):  # the job's verdict and the model's status change together
                _close_job(db, job_id, "rejected", gate.reason, outcome, challenger_id, actor)
                reject(challenger_id, f"the validation gate {gate.reason}", actor=actor, db=db)
            raise_alert(champion_id, "retrain_rejected", "info", f"Challenger {challenger_id} {gate.reason}.", day, db=db)
            notify(1.0, f"Challenger {challenger_id} {gate.reason}")  # the reason starts "rejected: ..."
            return {**result, "status": "rejected", "decision": gate.reason}
        testing = open_test is not None and settings.challenger_ab_test
        step(0.9, f"Opening the shadow A/B test of {challenger_id}" if testing else f"Deploying {challenger_id}")
        try:
            with transaction(db):  # the deploy (or the test) and the job's new state commit together, only if the job is ours
                if testing:  # a kill leaves either no test and a running job (interrupted), or both
                    experiment_id = open_test(challenger_id, champion_id, day, actor=actor, db=db)
                    _close_job(db, job_id, "testing", f"in a shadow A/B test (experiment {experiment_id}); {gate.reason}",
                               {**outcome, "experiment_id": experiment_id, "test_opened": day, "previous_id": champion_id},
                               challenger_id, actor, finished=False)
                else:  # the validation gate is this deploy's evidence; certification (slower) stays a separate step
                    deploy(challenger_id, actor=actor, reason=f"retrain ({trigger}), validation gate {gate.reason}",
                           override=True, expected_champion=champion_id, db=db)
                    _close_job(db, job_id, "validating", f"deployed; {gate.reason}",
                               {**outcome, "deployed_as_of": day, "previous_id": champion_id}, challenger_id, actor,
                               finished=False)
        except ChampionChanged as changed:  # someone deployed another model while this one trained
            decision = (f"champion changed from {champion_id} to {changed.actual or 'none'} during retraining; "
                        f"not deployed ({challenger_id} stays a candidate)")
            _close_job(db, job_id, "superseded", decision, outcome, challenger_id, actor)
            notify(1.0, decision)
            return {**result, "status": "superseded", "decision": decision}
        if testing:
            notify(1.0, f"{challenger_id} passed its gate and is in a shadow A/B test against {champion_id}")
            return {**result, "status": "testing", "decision": f"in a shadow A/B test; {gate.reason}"}
        raise_alert(challenger_id, "retrain_deployed", "info",
                    f"Deployed {challenger_id} replacing {champion_id} ({gate.reason}); validation window of "
                    f"{settings.validation_window_days} trading days started.", day, db=db)
        notify(1.0, f"Deployed {challenger_id}: {gate.reason}")
        return {**result, "status": "validating", "decision": f"deployed; {gate.reason}"}
    except BaseException as exc:  # killed or failed mid-way: record it, leave the registry as it was
        job = get_job(job_id, db=db)
        if owned_here(job):  # not if reconcile or a Retry took the job meanwhile
            if isinstance(exc, Exception):
                update_job(db, job_id, "failed", f"failed: {type(exc).__name__}: {exc}",
                           challenger_id=challenger_id or (registered[0] if registered else None), actor=actor)
            else:
                interrupt(db, job, f"stopped before finishing ({type(exc).__name__}: the page was closed or the "
                                    "process stopped)", actor=actor)
        log.warning("retrain of %s failed: %s", champion_id, exc)
        if isinstance(exc, Exception) and not isinstance(exc, RetrainError):
            raise RetrainError(f"Retraining {champion['symbol']} failed: {exc}. The deployed model was not changed.") from exc
        raise


# --- the automatic path -------------------------------------------------------------------------------

def _trigger(report) -> tuple[str | None, str]:
    """("drift", why) when the check calls for a retrain, else (None, why). A degraded model is one of
    `should_retrain`'s own reasons (live skill credibly below validation skill), so it needs no branch here."""
    fire, reason = should_retrain(report)
    return ("drift" if fire else None), reason


def _confirmations(db: sqlite_utils.Database, model_id: str, day: str, needed: int) -> int:
    """Consecutive drift checks up to `day` on which a retrain trigger held (today counts as one)."""
    check_days = [r[0] for r in db.execute(
        "SELECT DISTINCT as_of FROM drift_checks WHERE model_id = ? AND as_of < ? ORDER BY as_of DESC LIMIT ?",
        [model_id, day, needed - 1]).fetchall()]
    triggered = {r[0] for r in db.execute(
        "SELECT json_extract(details_json, '$.as_of') FROM retrain_jobs WHERE model_id = ? AND trigger IN (?, ?)",
        [model_id, *AUTO_TRIGGERS]).fetchall()}
    count = 1
    for check_day in check_days:
        if check_day not in triggered:
            break
        count += 1
    return count


def _last_automatic(db: sqlite_utils.Database, symbol: str, day: str) -> str | None:
    row = db.execute(  # a challenger deployed after its A/B test restarts the cooldown on its deploy day
        "SELECT MAX(COALESCE(json_extract(j.details_json, '$.deployed_as_of'), json_extract(j.details_json, '$.as_of'))) "
        "FROM retrain_jobs j JOIN models m ON m.model_id = j.model_id "
        f"WHERE m.symbol = ? AND j.trigger IN (?, ?) AND j.status IN ({', '.join('?' * len(TRAINED))}) "
        "AND json_extract(j.details_json, '$.as_of') < ?",
        [symbol, *AUTO_TRIGGERS, *TRAINED, day]).fetchone()
    return row[0] if row else None


def auto_retrain(model_id: str, as_of, report, db: sqlite_utils.Database | None = None, *,
                 register_challenger: RegisterChallenger, open_test: OpenTest | None = None) -> str:
    """The daily cycle's retrain decision for a deployed model, once per (model, day); returns it as text."""
    db = db or get_db()
    day = _day(as_of)
    reconcile_jobs(db)  # a job whose process died is neither running nor in the cooldown
    existing = db.execute(  # an interrupted decision is taken again (a rerun of a killed cycle)
        "SELECT status, decision FROM retrain_jobs WHERE model_id = ? AND trigger IN (?, ?) AND status != 'interrupted' "
        "AND json_extract(details_json, '$.as_of') = ? ORDER BY id LIMIT 1", [model_id, *AUTO_TRIGGERS, day]).fetchone()
    if existing:
        return f"{existing[0]}: {existing[1]} (decided earlier today)"
    trigger, reason = _trigger(report)
    if trigger is None:
        return "no retrain needed"
    settings = get_settings()
    model = get_model(model_id, db=db)
    details = {"as_of": day, "reason": reason, "severity": report.severity, "actor": "scheduler"}

    def blocked(decision: str) -> str:
        create_job(db, model_id, trigger, "blocked", decision, details, finished=True)
        return f"blocked: {decision}"

    if (open_job := open_challenger(db, model["symbol"], watched=True)) is not None:  # one loop per ticker at a time
        return blocked(f"challenger {open_job['challenger_id']} (job {open_job['id']}) is {open_job['status']}; "
                       "no second retrain while it is decided or watched")
    confirmed = _confirmations(db, model_id, day, settings.retrain_confirmations)
    details["confirmations"] = confirmed
    if not settings.enable_auto_retrain:
        return blocked("automatic retraining is off (MLSA_ENABLE_AUTO_RETRAIN=false); use Retrain Now")
    if confirmed < settings.retrain_confirmations:
        return blocked(f"awaiting confirmation: trigger held on {confirmed} of {settings.retrain_confirmations} consecutive checks")
    last = _last_automatic(db, model["symbol"], day)
    if last and (pd.Timestamp(day) - pd.Timestamp(last)).days < settings.retrain_cooldown_days:
        return blocked(f"cooldown: last automatic retrain on {last}, fewer than {settings.retrain_cooldown_days} days ago "
                       "(a tested challenger's deploy day counts as one)")
    judged = len(load_prices(model["symbol"], start=model["train_end"], end=day, db=db).index) - 1
    if judged < MIN_HOLDOUT_DAYS:  # the gate would reject it unseen: do not spend a training on it
        return blocked(f"too soon: {model_id} was trained to {model['train_end']}; the gate needs {MIN_HOLDOUT_DAYS} "
                       f"days out of sample for it, {max(judged, 0)} so far")
    queued = db.execute(
        "SELECT j.id FROM retrain_jobs j JOIN models m ON m.model_id = j.model_id WHERE m.symbol = ? "
        f"AND {QUEUED}", [model["symbol"]]).fetchone()
    if queued:
        return blocked(f"job {queued[0]} already awaits approval")
    if report.severity == "critical":
        job_id = create_job(db, model_id, trigger, "awaiting_approval",
                             "critical drift: waiting for approval on Model Management", details, finished=False)
        raise_alert(model_id, "approval_needed", "critical",
                    f"Critical drift ({reason}): retrain job {job_id} waits for approval on Model Management.", day, db=db)
        return f"awaiting approval (job {job_id})"
    try:
        result = retrain(model_id, day, trigger=trigger, reason=reason, actor="scheduler", db=db,
                         register_challenger=register_challenger, open_test=open_test)
    except RetrainError as exc:
        return f"failed: {exc}"
    return f"{result['status']}: {result['gate'].reason}"


def approve(job_id: int, actor: str = "ui", progress: Progress | None = None,
            db: sqlite_utils.Database | None = None, *, register_challenger: RegisterChallenger,
            open_test: OpenTest | None = None) -> dict[str, Any]:
    """Run a job from the approval queue (retrain, gate, deploy if it passes); also the Retry of an interrupted one.

    The job is claimed in one write transaction (queued -> running, owned by this process), so two
    people approving at once start one retrain, not two.
    """
    db = db or get_db()
    reconcile_jobs(db)  # an approval whose process died returns to the queue before this one is judged
    with transaction(db):
        job = get_job(job_id, db=db)
        if not is_queued(db, job_id) or job["status"] == "awaiting_deploy":  # a tested winner is deployed, not retrained
            raise RetrainError(f"Job {job_id} is {job['status']}, not awaiting approval to retrain.")
        still_deployed = get_model(job["model_id"], db=db)["status"] == "deployed"
        if still_deployed:
            update_job(db, job_id, "running", "training the challenger",
                        {"approved_by": actor, "actor": actor, "champion_id": job["model_id"]}, finished=False, actor=actor)
        else:
            update_job(db, job_id, "declined", f"{job['model_id']} is no longer deployed; nothing to retrain", actor=actor)
    if not still_deployed:
        raise RetrainError(f"{job['model_id']} is no longer deployed, so job {job_id} was closed.")
    return retrain(job["model_id"], job["details"]["as_of"], trigger=job["trigger"], reason=job["details"].get("reason", ""),
                   actor=actor, progress=progress, job_id=job_id, db=db, register_challenger=register_challenger,
                   open_test=open_test)


def decline(job_id: int, actor: str = "ui", db: sqlite_utils.Database | None = None) -> None:
    db = db or get_db()
    with transaction(db):
        if not is_queued(db, job_id) or get_job(job_id, db=db)["status"] == "awaiting_deploy":
            raise RetrainError(f"Job {job_id} is not awaiting approval to retrain.")
        update_job(db, job_id, "declined", f"declined by {actor}", actor=actor)


def retrain_now(symbol: str, as_of, actor: str = "ui", progress: Progress | None = None,
                db: sqlite_utils.Database | None = None, *, register_challenger: RegisterChallenger,
                open_test: OpenTest | None = None, trained_by: Handle | None = None) -> dict[str, Any]:
    """The "Retrain Now" button: no flag, confirmation or cooldown, but the same gate and validation window."""
    db = db or get_db()
    champion = deployed_model(symbol, db=db)
    if champion is None:
        raise RetrainError(f"No model is deployed for {symbol}: deploy one before retraining it.")
    if open_test is not None and (open_job := open_challenger(db, symbol)) is not None:
        raise RetrainError(f"{symbol}'s challenger {open_job['challenger_id']} (job {open_job['id']}) is "
                           f"{open_job['status']}: one challenger per ticker at a time.")
    return retrain(champion["model_id"], as_of, trigger="manual", reason="Retrain Now", actor=actor,
                   progress=progress, db=db, register_challenger=register_challenger, open_test=open_test,
                   trained_by=trained_by)


# --- validation window --------------------------------------------------------------------------------

def check_validation_window(symbol: str, as_of, db: sqlite_utils.Database | None = None) -> str | None:
    """Close the open validation window of `symbol` once it has enough days; rolls back a worse model.

    Returns what happened as text, or None when no window is open.
    """
    db = db or get_db()
    settings = get_settings()
    day = _day(as_of)
    row = db.execute(
        "SELECT j.id FROM retrain_jobs j JOIN models m ON m.model_id = j.challenger_id WHERE m.symbol = ? "
        "AND j.status = 'validating' ORDER BY j.id DESC LIMIT 1", [symbol]).fetchone()
    if row is None:
        return None
    job = get_job(row[0], db=db)
    challenger_id, previous_id = job["challenger_id"], job["details"]["previous_id"]
    current = deployed_model(symbol, db=db)
    if current is None or current["model_id"] != challenger_id:
        update_job(db, job["id"], "validated", "window closed: another model was deployed meanwhile")
        return "superseded"
    # predictions made on these days have their actual (the next close) known by `day`
    days = load_prices(symbol, start=job["details"]["deployed_as_of"], end=day, db=db).index[:-1]
    window = settings.validation_window_days
    if len(days) < window:
        return f"{len(days)} of {window} days"
    days = days[:window]
    new = counterfactual_predictions(challenger_id, days, db=db)
    old = counterfactual_predictions(previous_id, days, db=db)
    new_mae = float(np.mean(np.abs(new["predicted_close"] - new["actual_close"])))
    old_mae = float(np.mean(np.abs(old["predicted_close"] - old["actual_close"])))
    numbers = {"window": {"days": [_day(d) for d in days], "new_mae": new_mae, "previous_mae": old_mae}}
    if new_mae > old_mae * (1 + settings.retrain_margin):
        decision = (f"rolled back: ${new_mae:.3f} over {window} days vs ${old_mae:.3f} for {previous_id} "
                    f"(worse by more than {settings.retrain_margin:.0%})")
        with transaction(db):  # back to the champion it replaced, only if the challenger is still the deployed one
            try:
                rollback(symbol, actor="scheduler", reason=f"validation window: {decision}", to=previous_id,
                         expected_current=challenger_id, db=db)
            except RegistryError as exc:  # never land on a third model
                raise RetrainError(f"{exc} The validation window wanted to roll back to {previous_id}; "
                                   "roll back by hand on Model Management.") from exc
            update_job(db, job["id"], "rolled_back", decision, numbers)
        raise_alert(challenger_id, "rollback", "critical", f"{challenger_id} {decision}.", day, db=db)
        return decision
    decision = f"validated: ${new_mae:.3f} over {window} days vs ${old_mae:.3f} for {previous_id}"
    update_job(db, job["id"], "validated", decision, numbers)
    return decision
