"""What the A/B Tests page shows, as plain values: its defaults, its labels, its messages and its metric cards.

No streamlit here: the page reads widgets, calls these (and `core.abtest` to act) and draws. The
module sits above the services it reads (`abtest`, `registry`), in the page-views row of layer 5.
Experiment names are user text: every text here that the page renders as markdown and that quotes
one goes through `escape_markdown`, so a name is never rendered as a link, image or HTML.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import pandas as pd

from core import ab_replay, ab_validation, abtest
from core.ab_charts import (ab_cumulative_mae_figure, ab_error_distribution_figure, ab_sample_counts_figure,
                            ab_significance_figure)
from core.ab_stats import DECISION_RULE, ExperimentError
from core.formatting import ERROR_METRIC_FORMATS, NOT_ENOUGH, finite, signed_pct
from core.market import MarketDataError
from core.registry import (DEPLOYABLE_TYPES, CertificationRequired, RegistryError, deployed_model, get_model, list_models,
                           model_kind)
from core.runbook import runbook_caption
from core.text import escape_markdown

ARM_NAMES = "ABCD"
ARM_FORMATS = {**ERROR_METRIC_FORMATS, "share %": "%.0f%%"}  # the per-arm table's column formats
DECISION_CAPTION = (f"Decision rule in force: **{DECISION_RULE}**. Welch's / the paired t-test are shown for reference: "
                    "they are only valid if you look once, at the planned end.  \n"
                    + runbook_caption("ab", "What each verdict means and what to do about it"))
AA_TEST_NOTE = ("**A/A test**: the same model is in more than one arm. It checks the pipeline (routing, logging, "
                "the sample ratio); no arm can truly win, and a 'winner' would be a false alarm.")
NO_OBSERVATIONS = ("No predictions with known outcomes yet: they appear as the serving path answers requests "
                   "(or replay below).")
SHADOW_LABEL = "Shadow mode (every arm predicts every request; only the routed arm is served)"
OVERRIDE_LABEL = "Deploy the uncertified winner anyway (override, recorded in the audit log)"


def arm_model_ids(symbol: str) -> list[str]:
    """The models of `symbol` an arm can use (price or direction models; a test takes one kind), deployed first
    (the natural control)."""
    servable = list_models(symbol, model_types=DEPLOYABLE_TYPES)
    return [m["model_id"] for m in sorted(servable, key=lambda m: m["status"] != "deployed")]


def arm_model_label(i: int) -> str:
    return f"Arm {ARM_NAMES[i]} model" + (" (control)" if i == 0 else "")


def default_share(i: int, n_arms: int) -> int:
    """An even traffic split in whole percent, the remainder on the control."""
    return 100 // n_arms + (100 % n_arms if i == 0 else 0)


def start_help(symbol: str, first_start: date, data_end: date) -> str:
    return (f"Default: the first day every arm can be scored on ({first_start}). {symbol}'s "
            f"prices end on {data_end}: a test must start before that to collect data.")


def split_error(shares: Sequence[int]) -> str | None:
    """Why a traffic split in percent cannot be used (None when it sums to 100)."""
    total = sum(shares)
    return None if total == 100 else f"The traffic split must sum to 100 %, it sums to {total} %."


def created_message(new_id: int, name: str, symbol: str) -> str:
    return escape_markdown(f"Test #{new_id} '{name}' started on {symbol}.")


def test_labels(experiments: pd.DataFrame) -> dict[int, str]:
    """The test selector's options: id -> "#id name · ticker · status"."""
    return {int(r.id): f"#{r.id} {r.name} · {r.symbol} · {r.status}" for r in experiments.itertuples()}


def linked_test(value: str, ids: Sequence[int]) -> int | None:
    """The test a deep link (?test=3) names, if it exists."""
    return int(value) if value.isdigit() and int(value) in ids else None


def summary_cards(analysis) -> list[dict]:
    """The four metric cards (st.metric keyword arguments) of an `ExperimentAnalysis`: status, winner,
    improvement, sample ratio."""
    exp, result = analysis.experiment, analysis.comparison
    improvement = abtest.improvement_text(result, exp["metric"])
    quiet = dict(delta_color="off", delta_arrow="off")
    winner_note = analysis.winner_model_id or ("significant" if analysis.significant else "not significant")
    improvement_value = signed_pct(abs(analysis.improvement_pct)) if finite(analysis.improvement_pct) else NOT_ENOUGH
    return [
        dict(label="Status", value=exp["status"], delta=f"{exp['start_date']} → {exp['end_date']}", **quiet),
        dict(label="Winner", value=f"arm {analysis.winner}" if analysis.winner else "none yet", delta=winner_note, **quiet),
        dict(label="Improvement (observed)", value=improvement_value, **quiet, help=improvement,
             delta=improvement if analysis.significant or improvement == NOT_ENOUGH else "not significant: may be chance"),
        sample_ratio_card(exp, result),
    ]


def sample_ratio_card(experiment: Mapping, result) -> dict:
    """The sample-ratio card: a shadow test sends every request to both arms, so there is no ratio to check;
    a split test's chi-square p of the served counts against the configured split, or "no traffic yet"."""
    if experiment["shadow"]:
        return dict(label="Sample ratio", value="n/a", delta="shadow test", delta_color="off", delta_arrow="off",
                    help="A shadow test scores both arms on every request: there is no traffic split to check.")
    return dict(label="Sample ratio", value="MISMATCH" if result.srm_flag else "OK" if result.srm_p is not None else "—",
                delta=f"chi-square p = {result.srm_p:.3g}" if result.srm_p is not None else "no traffic yet",
                delta_color="red" if result.srm_flag else "off", delta_arrow="off")


def verdict(analysis) -> tuple[str, str, str | None]:
    """(kind, recommendation, note): "warning" on a sample ratio mismatch, "success" for a significant,
    certified winner, else "info"; the note says when the winner is not certified."""
    result = analysis.comparison
    winner = get_model(analysis.winner_model_id) if analysis.winner_model_id else None
    green = analysis.significant and not result.srm_flag and winner is not None and bool(winner["certified"])
    kind = "warning" if result.srm_flag else "success" if green else "info"
    note = None
    if winner is not None and not winner["certified"]:
        note = escape_markdown(f"{analysis.winner_model_id} is not certified: deploying it needs an override "
                               "(Model Management runs the five checks).")
    return kind, escape_markdown(analysis.recommendation), note


def test_caption(experiment: Mapping, result) -> str:
    """How the comparisons table was computed (the test, the per-comparison alpha, the sign of a difference)."""
    test = "paired t-test on shared requests (shadow mode)" if experiment["shadow"] else "Welch t-test (independent arms)"
    return (f"Test: {test} · alpha per comparison {result.alpha_per_comparison:.3g} (Bonferroni over "
            f"{len(result.comparisons)}) · difference = challenger − control in {experiment['metric'].upper()} "
            "(negative: the challenger errs less) · always-valid interval = the confidence sequence of that "
            "difference, safe to read at every look")


def figures(analysis) -> dict:
    """The four charts of an `ExperimentAnalysis` with observations, by widget key, in reading order:
    cumulative MAE, significance over time, error distribution, samples per arm."""
    observations, result = analysis.observations, analysis.comparison
    loss = analysis.experiment["metric"] if analysis.experiment["metric"] in ("log_loss", "brier") else "abs_error"
    return {"ab_cumulative": ab_cumulative_mae_figure(observations, loss),
            "ab_significance": ab_significance_figure(analysis.track, result.alpha_per_comparison),
            "ab_errors": ab_error_distribution_figure(observations, loss),
            "ab_counts": ab_sample_counts_figure(analysis.arms, analysis.experiment["min_samples"])}


def replay_window(experiment: Mapping) -> tuple[date | None, date | None, str, str]:
    """(first day, last day, kind, text): the days a running test can replay (`ab_replay.replay_bounds`, as dates),
    and what to say about them: a "caption" when there are days to replay (the page then offers the form),
    "info" when there are none, "error" (and no days) when the bounds cannot be computed."""
    try:
        first_day, last_day = (pd.Timestamp(d).date() for d in ab_replay.replay_bounds(experiment))
    except (MarketDataError, RegistryError) as exc:
        return None, None, "error", escape_markdown(f"Cannot replay this test: {exc}")
    if first_day > last_day:
        return first_day, last_day, "info", nothing_to_replay(first_day, last_day)
    return first_day, last_day, "caption", replay_caption(first_day, last_day)


def nothing_to_replay(first_day: date, last_day: date) -> str:
    return (f"Nothing to replay: the arms are trained up to {first_day}, after the last day this test can cover "
            f"({last_day}).")


def replay_caption(first_day: date, last_day: date) -> str:
    return (f"Days this test can replay: {first_day} to {last_day} (inside the test's dates, none inside an arm's "
            "training window). A day already served is not logged again.")


def replayed_message(start: date, end: date, days: int) -> str:
    return escape_markdown(f"Replayed {start} to {end}: {days} new trading days logged; days already "
                           "served were not logged again.")


@dataclass(frozen=True)
class StopAction:
    """The stop button as the test's state calls for it: deploy only a trustworthy winner that is not live yet."""

    label: str
    kind: str  # the button type: "primary" only when stopping deploys a winner
    deploy: bool
    reason: str  # escaped markdown, shown beside the button


def stop_action(analysis) -> StopAction:
    """"Stop and deploy winner" (primary, through the registry's certification gate) when the decision rule
    named a winner that is not the deployed model and the traffic split is sound; otherwise "Stop test",
    which deploys nothing, with the reason."""
    winner, result = analysis.winner_model_id, analysis.comparison
    if winner is None:
        why = f"No winner: {analysis.recommendation} Stopping deploys nothing; the deployed model stays."
        return StopAction("Stop test", "secondary", False, escape_markdown(why))
    if result.srm_flag:
        why = (f"Arm {analysis.winner} leads, but the sample ratio is broken (chi-square p = {result.srm_p:.2g}): its "
               "win cannot be trusted. Stopping deploys nothing.")
        return StopAction("Stop test", "secondary", False, escape_markdown(why))
    current = deployed_model(analysis.experiment["symbol"], kind=model_kind(get_model(winner)["model_type"]))
    if current is not None and current["model_id"] == winner:
        why = f"Arm {analysis.winner} ({winner}) wins and is already deployed: stopping keeps it, nothing to deploy."
        return StopAction("Stop test", "secondary", False, escape_markdown(why))
    why = (f"Arm {analysis.winner} ({winner}) wins: stopping deploys it through the registry "
           "(certification gate and audit, as a deploy on Model Management).")
    return StopAction("Stop and deploy winner", "primary", True, escape_markdown(why))


def confirm_text(experiment: Mapping, analysis, deploy: bool = True) -> str:
    """The stop confirmation: which test stops and what it deploys."""
    target = (f"deploy arm {analysis.winner} (**{escape_markdown(analysis.winner_model_id)}**)"
              if deploy and analysis.winner_model_id else "deploy nothing")
    return f"Confirm: stop **{escape_markdown(experiment['name'])}** and {target}?"


def stopped_message(done: Mapping) -> str:
    """What `abtest.stop` did, in words (escaped)."""
    return escape_markdown(f"Stopped. Deployed {done['deployed']}." if done["deployed"]
                           else f"Stopped. Nothing deployed. {done['recommendation']}")


def stop_test(experiment_id: int, override: bool, deploy: bool = True) -> tuple[str, str, bool]:
    """Stop a test and, with `deploy` (`StopAction.deploy`), deploy its winner (`abtest.stop`); (flash kind,
    escaped message, needs override).

    An uncertified winner without `override` stops nothing and asks for the override; a refusal says why.
    A database fault is not caught here: the page's action guard reports it.
    """
    try:
        done = abtest.stop(experiment_id, deploy_winner=deploy, actor="ui", override=override)
    except CertificationRequired as exc:
        return "error", escape_markdown(f"{exc} Tick the override box to deploy it anyway."), True
    except (ExperimentError, RegistryError) as exc:
        return "error", escape_markdown(str(exc)), False
    return "success", stopped_message(done), False


def create_test(name: str, symbol: str, model_ids: Sequence[str], shares: Sequence[int], start, duration, min_samples,
                confidence, shadow: bool) -> tuple[int | None, str]:
    """Create a test from the page's form (`abtest.create_experiment`; traffic shares in whole percent).

    (new id, escaped success message), or (None, why not) for a split that does not sum to 100 or a
    refused test. A database fault is not caught here: the page's action guard reports it.
    """
    if error := split_error(shares):
        return None, error
    arms = [(m, s / 100) for m, s in zip(model_ids, shares)]
    try:
        new_id = abtest.create_experiment(name, symbol, arms, start, int(duration), int(min_samples), float(confidence),
                                          shadow=shadow, actor="ui", metric=ab_validation.default_metric(model_ids))
    except ExperimentError as exc:
        return None, escape_markdown(str(exc))
    return new_id, created_message(new_id, name, symbol)


def replay_test(experiment_id: int, start, end) -> tuple[str, str, str]:
    """Replay days through the serving path (`ab_replay.simulate`): (status state, status label, escaped message).

    The state is "complete" (the message is the page's flash) or "error" (the message says why).
    A database fault is not caught here: the page's action guard reports it.
    """
    try:
        days = ab_replay.simulate(experiment_id, start, end)
    except (ExperimentError, MarketDataError, RegistryError) as exc:
        return "error", "Replay refused", escape_markdown(str(exc))
    return "complete", f"Logged {days} new trading days", replayed_message(start, end, days)
