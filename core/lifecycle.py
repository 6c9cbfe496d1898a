"""The model lifecycle (orchestration): train -> register -> explainability artifacts -> certify -> model card, deploy actions.

The registry stores a model and nothing else, and certification stores a verdict and nothing else;
this module chains them with explainability (a layer above both), so the Forecast and Model
Management pages, the demo, the daily cycle and retraining all get the same lifecycle:
- `register_with_artifacts`: register, then write SHAP importance and the model card (a failure
  there is logged and never undoes the registration);
- `certify_with_card`: certify, then rewrite the card so it shows the result;
- `retrain_now`, `approve`, `auto_retrain`: `core.retrain` with challengers registered as above and,
  once past their gate, put in a shadow A/B test (`core.challenger`); `advance_challenger` decides it;
- `pending_action` / `confirm_action`: the confirmation step before a deploy or rollback;
- `*_for_page`: Model Management's buttons, each returning its result or the sentence that says what
  went wrong (the page only draws; database faults still go to its `action_guard`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlite_utils

from core import challenger, drift, registry, retrain
from core.certification import Certification, certify
from core.cluster import Handle
from core.drift_kernels import DriftInputError
from core.explain import ExplainError
from core.model_card import write_model_artifacts
from core.registry import ModelIntegrityError, RegistryError
from core.retrain import Progress
from core.retrain_jobs import RetrainError, approval_queue, get_job
from core.store_faults import describe_error
from core.text import escape_markdown
from core.training import TrainedModel

log = logging.getLogger(__name__)


def register_with_artifacts(trained: TrainedModel, parent_id: str | None = None, reason: str = "trained",
                            actor: str = "user", db: sqlite_utils.Database | None = None,
                            on_registered: Callable[[str], None] | None = None) -> str:
    """Register `trained` as a candidate and write its explainability artifacts + model card; returns its id.

    `on_registered(model_id)` runs between the two (a retrain records its challenger there), so a
    process killed while the artifacts are written leaves a record of the model it registered;
    `core.retrain_jobs.reconcile` then names the model and, given `write_artifacts`, finishes them.
    """
    model_id = registry.register(trained, parent_id=parent_id, reason=reason, actor=actor, db=db)
    if on_registered is not None:
        on_registered(model_id)
    try:  # never undoes the registration: the artifacts can be written again from Model Management
        write_model_artifacts(model_id, db=db)
    except Exception as exc:
        log.warning("%s: explainability artifacts were not written (%s); call write_model_artifacts(%r) to retry",
                    model_id, exc, model_id, exc_info=True)
    return model_id


def write_artifacts(model_id: str, db: sqlite_utils.Database | None = None) -> None:
    """Write a model's explainability artifacts and card again: `reconcile`'s callback for a model whose
    registration was interrupted before they were finished."""
    write_model_artifacts(model_id, db=db)


def certify_with_card(model_id: str, progress: Progress | None = None, store: bool = True,
                      db: sqlite_utils.Database | None = None) -> Certification:
    """Certify `model_id`; when the result is stored, rewrite the model card so it shows it."""
    result = certify(model_id, progress=progress, store=store, db=db)
    if store:
        try:  # milliseconds: the importance files are reused; a stale card must not undo the certification
            write_model_artifacts(model_id)
        except Exception as exc:
            log.warning("could not rewrite the model card of %s after certification: %s", model_id, exc)
    return result


# --- retraining, with challengers registered through the lifecycle --------------------------------------

def retrain_now(symbol: str, as_of, actor: str = "ui", progress: Progress | None = None,
                db: sqlite_utils.Database | None = None, trained_by: Handle | None = None) -> dict[str, Any]:
    """The "Retrain Now" button (`core.retrain.retrain_now`); `trained_by`: its training already submitted
    (a bulk retrain, `core.bulk_retrain`)."""
    return retrain.retrain_now(symbol, as_of, actor=actor, progress=progress, db=db,
                               register_challenger=register_with_artifacts, open_test=challenger.open_test,
                               trained_by=trained_by)


def retrain_summary(symbol: str, outcome: dict) -> dict:
    """What Retrain Now did, for the page: the challenger named, its fate in words, the gate's numbers ($)."""
    gate, challenger = outcome["gate"], outcome.get("challenger_id")
    fate = {"validating": f"deployed {challenger}; it is watched for the validation window",
            "testing": f"put {challenger} in a shadow A/B test against the champion (it passed the validation gate)",
            "rejected": f"rejected {challenger} at the validation gate: {gate.reason.removeprefix('rejected: ')}; the "
                        "champion stays deployed",
            "superseded": outcome["decision"]}.get(outcome["status"], outcome["decision"])
    return {"symbol": symbol, "challenger_id": challenger, "deployed": outcome["status"] == "validating",
            "message": f"Retrain Now {fate}.",
            "gate": {"challenger MAE $": gate.challenger_mae, "champion MAE $": gate.champion_mae,
                     "naive MAE $": gate.naive_mae, "margin": gate.margin, "holdout days": gate.holdout_days,
                     "passed": gate.passed}}


def approve(job_id: int, actor: str = "ui", progress: Progress | None = None,
            db: sqlite_utils.Database | None = None, as_of=None) -> dict[str, Any]:
    """Run a job from the approval queue, or retry an interrupted one (`core.retrain.approve`); a tested
    winner awaiting its deploy is deployed (`core.challenger.approve_deploy`)."""
    if get_job(job_id, db=db)["status"] == "awaiting_deploy":
        return {"decision": challenger.approve_deploy(job_id, actor=actor, db=db, certify_model=certify_with_card,
                                                      on_deployed=refresh_cards, as_of=as_of)}
    return retrain.approve(job_id, actor=actor, progress=progress, db=db, register_challenger=register_with_artifacts,
                           open_test=challenger.open_test)


def auto_retrain(model_id: str, as_of, report, db: sqlite_utils.Database | None = None) -> str:
    """The daily cycle's retrain decision (`core.retrain.auto_retrain`)."""
    return retrain.auto_retrain(model_id, as_of, report, db=db, register_challenger=register_with_artifacts,
                                open_test=challenger.open_test)


def advance_challenger(symbol: str, as_of, db: sqlite_utils.Database | None = None) -> str | None:
    """The daily cycle's look at `symbol`'s challenger test (`core.challenger.advance`), with the winner's
    certification and model cards written as for a deploy from Model Management."""
    return challenger.advance(symbol, as_of, db=db, certify_model=certify_with_card, on_deployed=refresh_cards)


def approve_all(as_of, actor: str, db: sqlite_utils.Database | None = None) -> list[str]:
    """Approve every job in the approval queue on `as_of`, one line per job: a replay's stand-in for the
    person who clicks Approve (`scheduled_tasks.py --replay --approve`); the critical-drift rule still
    queues them first, and the audit log names `actor`."""
    lines = []
    for job_id in approval_queue(db=db)["id"]:
        try:
            lines.append(f"job {job_id} approved by {actor}: {approve(int(job_id), actor=actor, db=db, as_of=as_of)['decision']}")
        except (RetrainError, RegistryError) as exc:
            lines.append(f"job {job_id} could not be approved: {exc}")
    return lines


def decide_job(job_id: int, approved: bool, actor: str = "ui", db: sqlite_utils.Database | None = None) -> str:
    """Approve (retrain, gate, deploy if it passes) or decline a queued job; returns the decision as text."""
    if approved:
        return approve(job_id, actor=actor, db=db)["decision"]
    if get_job(job_id, db=db)["status"] == "awaiting_deploy":
        return challenger.decline_deploy(job_id, actor=actor, db=db)
    retrain.decline(job_id, actor=actor, db=db)
    return "declined"


# --- deploy and rollback, behind a confirmation step ------------------------------------------------------

def pending_action(pending: dict, db: sqlite_utils.Database | None = None) -> tuple[str, str, bool]:
    """(what will happen, the model deployed now, whether an override is needed) for a pending
    {"action": "deploy", "model_id"} or {"action": "rollback", "symbol"}: what the confirmation shows.

    The deployed model shown is kept in `pending["expected_champion"]` (the dict the page keeps in its
    session): the first time it is shown, it is looked up; afterwards the same one is returned, so the
    rerun that carries the Confirm click shows, and `confirm_action` checks, the model the person saw.
    """
    if pending["action"] == "deploy":
        model = registry.get_model(pending["model_id"], db=db)
        what, symbol, needs_override = f"deploy **{pending['model_id']}**", model["symbol"], not model["certified"]
        kind = registry.model_kind(model["model_type"])
    else:
        kind = pending.get("kind", "price")
        what, symbol, needs_override = (f"roll back **{pending['symbol']}**'s {kind} model to its previous version",
                                        pending["symbol"], False)
    if "expected_champion" not in pending:
        current = registry.deployed_model(symbol, db=db, kind=kind)
        pending["expected_champion"] = current["model_id"] if current else registry.NO_CHAMPION
    return what, pending["expected_champion"] or "none", needs_override


def confirm_action(pending: dict, override: bool = False, override_reason: str = "", actor: str = "ui",
                   db: sqlite_utils.Database | None = None) -> str:
    """Carry out a confirmed deploy or rollback; returns what happened. Registry errors propagate.

    A compare-and-swap against the deployed model the confirmation showed (`pending_action`): if
    another session deployed or rolled back meanwhile, nothing happens and `registry.ChampionChanged`
    says who changed it; `pending` then holds the new champion, so the panel shows it and a second
    Confirm acts on what the person now sees. A pending dict never shown (no "expected_champion")
    is checked against the model deployed now.
    """
    expected = pending.get("expected_champion")
    try:
        if pending["action"] == "deploy":
            result = registry.deploy(pending["model_id"], actor=actor, override=override, db=db,
                                     reason=override_reason if override else "deployed from Model Management",
                                     expected_champion=expected)
        else:
            result = registry.rollback(pending["symbol"], actor=actor, reason="rolled back from Model Management", db=db,
                                       expected_current=expected, kind=pending.get("kind", "price"))
    except registry.ChampionChanged as changed:
        pending["expected_champion"] = changed.actual or registry.NO_CHAMPION
        raise registry.ChampionChanged(
            changed.symbol, changed.expected, changed.actual,
            f"{changed} Check the models below, then confirm again to act on {changed.actual or 'no deployed model'}.",
        ) from changed
    refresh_cards([result["deployed"], result["previous"]], db=db)
    return f"Deployed {result['deployed']} (previous: {result['previous'] or 'none'})."


def refresh_cards(model_ids: list[str | None], db: sqlite_utils.Database | None = None) -> list[str]:
    """Rewrite the model cards of `model_ids` so their status and reason match the registry after a deploy or
    rollback (a card-only rewrite, milliseconds; importance and figure are reused). A card that cannot be
    written is logged, never undoes the deploy. Returns the ids whose card was rewritten."""
    done = []
    for model_id in [m for m in model_ids if m]:
        try:
            write_model_artifacts(model_id, db=db)
            done.append(model_id)
        except Exception as exc:  # the deploy stands; the Artifacts tab offers "Write artifacts again"
            log.warning("%s: model card not refreshed after the deploy: %s", model_id, exc)
    return done


# --- Model Management's buttons: (result, None) or (None, what went wrong) ---------------------------------

RETRAIN_ERRORS = (RetrainError, RegistryError, ModelIntegrityError)


def confirm_for_page(pending: dict, override: bool, override_reason: str) -> tuple[str | None, str | None]:
    """Confirm: (what happened, None), or (None, the registry's refusal), e.g. an uncertified model without override."""
    try:
        return confirm_action(pending, override, override_reason, actor="ui"), None
    except (RegistryError, ModelIntegrityError) as exc:
        return None, str(exc)


def check_drift_for_page(model_id: str) -> tuple[dict | None, str | None]:
    """Check for Drift on the last trading day: (the stored report as a dict, None), or (None, why not)."""
    try:  # a direction model is checked on its P(up) and scoring rules (`drift.classifier_checks`)
        return drift.check_model(model_id).to_dict(), None
    except (DriftInputError, RegistryError, ModelIntegrityError, ValueError) as exc:
        return None, f"{exc} This button checks the last trading day; the Drift page lets you pick the date."


def certify_for_page(model_id: str, progress: Progress) -> tuple[str | None, str | None]:
    """Run certification (stored, card rewritten): (the verdict in words, None), or (None, why it could not run).
    `progress(fraction, text)` gets fractions clamped to 1 (a Streamlit progress bar refuses more)."""
    try:  # a progress bar takes fractions up to 1
        result = certify_with_card(model_id, progress=lambda fraction, message: progress(min(fraction, 1.0), message))
    except (ValueError, RegistryError) as exc:
        return None, f"Certification failed to run: {exc}"
    if result.certified:
        return f"{model_id}: certified ({result.seconds:.1f} s).", None
    failed = ", ".join(check.label for check in result.checks if not check.passed)
    return f"{model_id}: not certified ({result.seconds:.1f} s); failed: {failed}. The Certification tab has the numbers.", None


def retrain_for_page(symbol: str, as_of, progress: Progress) -> tuple[dict | None, str | None]:
    """Retrain Now: (`retrain_summary` of the outcome, None), or (None, the refusal, escaped for markdown)."""
    try:
        return retrain_summary(symbol, retrain_now(symbol, as_of, actor="ui", progress=progress)), None
    except RETRAIN_ERRORS as exc:
        return None, escape_markdown(exc)


def decide_job_for_page(job_id: int, approved: bool) -> tuple[str | None, str | None]:
    """Approve (or retry) / decline a queued job: ("Job N: <decision>", None), or (None, why not)."""
    try:
        return f"Job {job_id}: {decide_job(int(job_id), approved=approved, actor='ui')}", None
    except RETRAIN_ERRORS as exc:
        return None, str(exc)


def write_artifacts_for_page(model_id: str) -> str | None:
    """Write (again) a model's SHAP and permutation importance and its card: None when done, else why not."""
    try:
        write_model_artifacts(model_id, refresh=True)
    except (ExplainError, RegistryError, ModelIntegrityError, OSError) as exc:
        return f"The artifacts could not be written: {describe_error(exc) or exc}"
    return None
