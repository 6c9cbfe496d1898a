"""The challenger stage of the loop: a retrained model that passed its gate earns its place in a shadow A/B test.

drift -> retrain -> gate (`core.retrain`) -> shadow test (`open_test`) -> decided here (`advance`, once
per daily cycle) -> deployed and watched (`core.retrain.check_validation_window`), or archived.

- `open_test` opens a paired shadow experiment (`core.abtest`): the champion serves every request
  (share 1), the challenger predicts the same requests unserved (share 0). It runs for at most
  MLSA_AB_DEFAULT_DURATION_DAYS calendar days and decides on the peeking-safe rule of `core.ab_stats`
  once each arm has MLSA_CHALLENGER_MIN_SAMPLES scored days.
- `advance` looks at the test on a day: challenger significantly better -> certified and deployed
  through the registry (an uncertified winner is deployed with an override whose reason is the test's
  evidence, as a person would on Model Management), or left in the approval queue
  (MLSA_CHALLENGER_DEPLOY=approval); champion significantly better, or the maximum duration without
  a winner -> the challenger is archived with the reason. The job (`core.retrain_jobs`) carries the
  state: "testing" -> "validating" (the watch) | "awaiting_deploy" | "archived" | "superseded".
Each transition is one transaction on the job's state, so a day analysed twice, or a cycle killed and
run again, takes each decision once; one challenger per ticker (`retrain_jobs.open_challenger`).
"""
from __future__ import annotations

import logging
from typing import Any
from collections.abc import Callable

import pandas as pd
import sqlite_utils

from core import abtest
from core.alerts import raise_alert
from core.certification import certify
from core.config import get_settings
from core.market import load_prices
from core.registry import ChampionChanged, archive, deploy, deployed_model, get_model
from core.retrain_jobs import RetrainError, get_job, note_progress, open_challenger, update_job
from core.store import get_db, transaction
from core.text import json_safe

log = logging.getLogger(__name__)

Certify = Callable[..., object]  # certify(model_id, db=) -> an object with `certified` and `checks`
OnDeployed = Callable[[list[str]], object]  # e.g. `core.lifecycle.refresh_cards`


def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


def open_test(challenger_id: str, champion_id: str, day, actor: str = "scheduler",
              db: sqlite_utils.Database | None = None) -> int:
    """Open the paired shadow test of `challenger_id` against the deployed `champion_id`; returns its id.

    Joins the caller's transaction (`core.retrain` records the job's "testing" state in the same one).
    ChampionChanged when `champion_id` is no longer deployed.
    """
    db = db or get_db()
    settings = get_settings()
    symbol = get_model(challenger_id, db=db)["symbol"]
    current = deployed_model(symbol, db=db)
    if current is None or current["model_id"] != champion_id:
        actual = current["model_id"] if current else None
        raise ChampionChanged(symbol, champion_id, actual, f"The deployed {symbol} model changed from {champion_id} to "
                                                           f"{actual or 'none'}; the challenger's test was not opened.")
    for (leftover,) in db.execute(  # a retrain killed after registering its challenger: never a second one
            "SELECT j.challenger_id FROM retrain_jobs j JOIN models m ON m.model_id = j.challenger_id WHERE m.symbol = ? "
            "AND j.status = 'interrupted' AND m.status = 'candidate' AND j.challenger_id != ?",
            [symbol, challenger_id]).fetchall():
        archive(leftover, actor=actor, db=db, reason=f"its retrain was interrupted before its test; {challenger_id} "
                                                     "was trained again and tested instead")
    return abtest.create_experiment(
        f"{symbol}: challenger {challenger_id} vs champion {champion_id} (shadow, from {_day(day)})", symbol,
        [(champion_id, 1.0), (challenger_id, 0.0)], start_date=_day(day),
        duration_days=settings.ab_default_duration_days, min_samples=settings.challenger_min_samples,
        shadow=True, actor=actor, db=db)


def advance(symbol: str, day, actor: str = "scheduler", db: sqlite_utils.Database | None = None,
            certify_model: Certify = certify, on_deployed: OnDeployed | None = None) -> str | None:
    """Look at `symbol`'s challenger test on `day` and take the decision it allows; returns it as text
    (None: no challenger in test). Idempotent: a decided job is no longer "testing"."""
    db = db or get_db()
    job = open_challenger(db, symbol)
    if job is None or job["status"] != "testing":
        return None if job is None else f"challenger {job['challenger_id']} awaits approval to deploy (job {job['id']})"
    day = _day(day)
    experiment = abtest.get_experiment(job["details"]["experiment_id"], db=db)
    challenger_id, champion_id = job["challenger_id"], job["details"]["previous_id"]
    if day < experiment["start_date"]:  # a replay of earlier days: the test does not exist yet on `day`
        return f"challenger {challenger_id}'s test starts on {experiment['start_date']}, after {day}"
    if experiment["status"] != "running":
        return _stopped_elsewhere(job, experiment, actor, db)
    current = deployed_model(symbol, db=db)
    if current is None or current["model_id"] != champion_id:
        return _close(job, experiment, "superseded", f"{champion_id} was replaced by "
                      f"{current['model_id'] if current else 'none'} during the test", day, actor, db)
    analysis = abtest.analyze(experiment["id"], as_of=day, db=db)
    comparison = analysis.comparison.comparisons[0]
    evidence = json_safe({  # an undefined number (no scored day yet) is stored as null: NaN is not JSON, and SQLite's
        "look": day, "n": int(analysis.comparison.n["B"]), "min_samples": experiment["min_samples"],  # json_extract
        "p_sequential": comparison.p_sequential, "champion_mae": analysis.comparison.mean_loss["A"],  # rejects it
        "challenger_mae": analysis.comparison.mean_loss["B"], "improvement_pct": analysis.improvement_pct})
    if analysis.winner == "B":
        return _winner(job, experiment, evidence, day, actor, db, certify_model, on_deployed)
    if analysis.winner == "A":
        why = (f"the champion was significantly better in the shadow test (MAE ${evidence['champion_mae']:.3f} vs "
               f"${evidence['challenger_mae']:.3f}, always-valid p = {comparison.p_sequential:.3g})")
        return _close(job, experiment, "archived", why, day, actor, db, evidence)
    if day >= experiment["end_date"]:
        planned = (pd.Timestamp(experiment["end_date"]) - pd.Timestamp(experiment["start_date"])).days + 1
        why = (f"no significant difference in {planned} days (n = {evidence['n']}, "
               f"always-valid p = {comparison.p_sequential:.3g}); the champion stays")
        return _close(job, experiment, "archived", why, day, actor, db, evidence)
    note_progress(db, job["id"], {"last_look": evidence})
    return (f"challenger {challenger_id} in test since {experiment['start_date']}: {evidence['n']} of "
            f"{experiment['min_samples']} samples, p = {comparison.p_sequential:.3g}")


def _close(job: dict, experiment: dict, status: str, why: str, day: str, actor: str,
           db: sqlite_utils.Database, evidence: dict | None = None) -> str:
    """Stop the test without deploying, archive the challenger with the reason, close the job: one transaction."""
    challenger_id = job["challenger_id"]
    with transaction(db):
        if experiment["status"] == "running":
            abtest.stop(experiment["id"], deploy_winner=False, as_of=day, actor=actor, db=db)
        if get_model(challenger_id, db=db)["status"] == "candidate":
            archive(challenger_id, actor=actor, db=db, reason=why)
        update_job(db, job["id"], status, f"challenger archived: {why}",
                   {"decided_on": day, **({"test": evidence} if evidence else {})}, actor=actor)
    raise_alert(challenger_id, "challenger_archived", "info", f"Challenger {challenger_id} archived: {why}.", day, db=db)
    return f"challenger {challenger_id} archived: {why}"


def _winner(job: dict, experiment: dict, evidence: dict, day: str, actor: str, db: sqlite_utils.Database,
            certify_model: Certify, on_deployed: OnDeployed | None) -> str:
    challenger_id = job["challenger_id"]
    won = (f"won its shadow test: MAE ${evidence['challenger_mae']:.3f} vs ${evidence['champion_mae']:.3f} over "
           f"{evidence['n']} days (always-valid p = {evidence['p_sequential']:.3g})")
    if get_settings().challenger_deploy == "approval":
        return _await_deploy(job, experiment, won, "awaiting approval to deploy", evidence, day, actor, db)
    result = certify_model(challenger_id, db=db)
    if not result.certified:  # the certification gate holds as for a manual deploy: only a person may override it
        failed = ", ".join(c.label for c in result.checks if not c.passed)
        return _await_deploy(job, experiment, won, f"not certified (failed: {failed}): a person decides whether to "
                             "deploy it anyway (Approve deploys with an audited override)", evidence, day, actor, db)
    return _deploy(job, evidence, won, day, actor, db, certify_model, on_deployed, experiment, certified=result)


def _await_deploy(job: dict, experiment: dict, won: str, why: str, evidence: dict, day: str, actor: str,
                  db: sqlite_utils.Database) -> str:
    """Stop the test and leave the winner in the approval queue (job status `awaiting_deploy`)."""
    challenger_id = job["challenger_id"]
    with transaction(db):
        abtest.stop(experiment["id"], deploy_winner=False, as_of=day, actor=actor, db=db)
        update_job(db, job["id"], "awaiting_deploy", f"{won}; {why}",
                   {"decided_on": day, "test": evidence}, finished=False, actor=actor)
    raise_alert(challenger_id, "approval_needed", "warning",
                f"Challenger {challenger_id} {won}; {why}: decide on Model Management (job {job['id']}).", day, db=db)
    return f"challenger {challenger_id} {won}; {why} (job {job['id']})"


def _deploy(job: dict, evidence: dict, won: str, day: str, actor: str, db: sqlite_utils.Database,
            certify_model: Certify, on_deployed: OnDeployed | None, experiment: dict | None = None,
            certified: Any = None) -> str:
    """Certify the winner, then stop its test, deploy it (compare-and-swap on the champion) and start the
    validation window, in one transaction. Only a person's approval reaches here with an uncertified winner: it
    then goes live with an override whose reason names the failed checks and the test's evidence (audit log).
    `certified` is the certification the caller already ran (certifying refits models: once is enough)."""
    challenger_id, champion_id = job["challenger_id"], job["details"]["previous_id"]
    result = certified if certified is not None else certify_model(challenger_id, db=db)
    failed = [c.label for c in result.checks if not c.passed]
    reason = f"challenger {won}" + ("" if result.certified else f"; not certified (failed: {', '.join(failed)}), "
                                     "deployed on the shadow test's evidence")
    try:
        with transaction(db):
            if experiment is not None and experiment["status"] == "running":
                abtest.stop(experiment["id"], deploy_winner=False, as_of=day, actor=actor, db=db)
            deploy(challenger_id, actor=actor, reason=reason, override=not result.certified,
                   expected_champion=champion_id, db=db)
            update_job(db, job["id"], "validating", f"deployed: {reason}",
                       {"decided_on": day, "test": evidence, "deployed_as_of": day, "certified": bool(result.certified)},
                       finished=False, actor=actor)
    except ChampionChanged as changed:
        return _close(job, experiment or {"status": "stopped"}, "superseded", str(changed), day, actor, db, evidence)
    if on_deployed is not None:
        on_deployed([challenger_id, champion_id])
    raise_alert(challenger_id, "retrain_deployed", "info",
                f"Deployed {challenger_id} replacing {champion_id}: {reason}; validation window of "
                f"{get_settings().validation_window_days} trading days started.", day, db=db)
    return f"deployed {challenger_id}: {reason}"


def _stopped_elsewhere(job: dict, experiment: dict, actor: str, db: sqlite_utils.Database) -> str:
    """The test was stopped on the A/B Tests page: follow what it did (deployed the challenger or not)."""
    day = experiment["stopped_at"] or experiment["end_date"]
    current = deployed_model(experiment["symbol"], db=db)
    if current is not None and current["model_id"] == job["challenger_id"]:
        update_job(db, job["id"], "validating", "deployed when its test was stopped on the A/B Tests page",
                   {"decided_on": day, "deployed_as_of": day}, finished=False, actor=actor)
        return f"challenger {job['challenger_id']} was deployed from the A/B Tests page; validation window started"
    return _close(job, experiment, "archived", "its test was stopped on the A/B Tests page without deploying it",
                  day, actor, db)


def approve_deploy(job_id: int, actor: str = "ui", db: sqlite_utils.Database | None = None,
                   certify_model: Certify = certify, on_deployed: OnDeployed | None = None, as_of=None) -> str:
    """Deploy a tested winner waiting in the approval queue; its validation window starts on `as_of`
    (default: "today", the data's last day; a replay passes its own day)."""
    db = db or get_db()
    job = get_job(job_id, db=db)
    if job["status"] != "awaiting_deploy":
        raise RetrainError(f"Job {job_id} is {job['status']}, not a tested challenger awaiting its deploy.")
    symbol = get_model(job["challenger_id"], db=db)["symbol"]
    day = _day(as_of if as_of is not None else load_prices(symbol, db=db).index[-1])
    test = job["details"].get("test", {})
    won = (f"won its shadow test (MAE ${test.get('challenger_mae', float('nan')):.3f} vs "
           f"${test.get('champion_mae', float('nan')):.3f}), deploy approved by {actor}")
    return _deploy(job, test, won, day, actor, db, certify_model, on_deployed)


def decline_deploy(job_id: int, actor: str = "ui", db: sqlite_utils.Database | None = None) -> str:
    """Decline a tested winner's deploy: the challenger is archived, the champion stays."""
    db = db or get_db()
    job = get_job(job_id, db=db)
    if job["status"] != "awaiting_deploy":
        raise RetrainError(f"Job {job_id} is {job['status']}, not a tested challenger awaiting its deploy.")
    symbol = get_model(job["challenger_id"], db=db)["symbol"]
    return _close(job, {"status": "stopped"}, "archived", f"its deploy was declined by {actor}",
                  _day(load_prices(symbol, db=db).index[-1]), actor, db)
