"""What Model Management shows: the registry as a table, one model's headline numbers and facts, its family, a drift verdict.

Read-only shaping for `pages/2_Model_Management.py` (like `drift_view` for the Drift page): rows
and words, no Streamlit. The registry owns the rows; this module only arranges them.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import sqlite_utils

from core import registry
from core.charts import validation_figure
from core.direction import DIRECTION
from core.direction_charts import reliability_figure
from core.drift_report import DriftReport, should_retrain
from core.registry import DEPLOYABLE_TYPES, ModelIntegrityError
from core.runbook import runbook_caption
from core.text import escape_markdown

# number formats (and help) of the models table's columns, for st.column_config.NumberColumn
TABLE_FORMATS: dict[str, tuple[str, str | None]] = {
    "MAE $": ("$%.3f", None), "naive MAE $": ("$%.3f", None), "RMSE $": ("$%.3f", None),
    "MAPE %": ("%.2f%%", None), "direction %": ("%.1f%%", None),
    "skill": ("%+.3f", "price models: 1 - MAE_model / MAE_naive; direction models: 1 - Brier / Brier of the better "
                       "baseline (always up, same as today); below 0 loses to it"),
    "accuracy %": ("%.1f%%", "direction models: share of days whose up / down call was right (walk-forward)"),
    "baseline accuracy %": ("%.1f%%", "the better of always up and same as today on the same days"),
    "AUC": ("%.3f", None), "Brier": ("%.4f", None),
}


def models_table(symbol: str | None = None, status: str | None = None,
                 db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """The registry as a display table: one row per model with its headline validation metrics."""
    rows = []
    for m in registry.list_models(symbol, status, db=db):
        metrics = m["metrics"]
        rows.append({
            "model_id": m["model_id"], "symbol": m["symbol"], "type": m["model_type"], "version": m["version"],
            "status": m["status"], "certified": bool(m["certified"]), "created": m["created_at"][:16].replace("T", " "),
            "train_end": m["train_end"], "MAE $": metrics.get("mae"), "naive MAE $": metrics.get("naive", {}).get("mae"),
            "skill": metrics.get("skill"), "RMSE $": metrics.get("rmse"), "MAPE %": metrics.get("mape"),
            "direction %": metrics.get("directional_accuracy"), **_direction_columns(metrics), "parent": m["parent_id"] or "",
        })
    return pd.DataFrame(rows)


def _direction_columns(metrics: dict) -> dict[str, float | None]:
    """A direction model's classifier metrics for the table (None for a price model, whose columns are the $ ones)."""
    if metrics.get("kind") != DIRECTION:
        return {"accuracy %": None, "baseline accuracy %": None, "AUC": None, "Brier": None}
    best = metrics["baselines"][metrics["best_baseline"]]
    return {"accuracy %": 100 * metrics["accuracy"], "baseline accuracy %": 100 * best["accuracy"],
            "AUC": metrics["roc_auc"], "Brier": metrics["brier"]}


def default_model_index(table: pd.DataFrame) -> int:
    """Which row of `models_table` the model picker opens on: the first deployed price model (the one Home shows),
    else the first deployed model (a direction model), else the first row."""
    deployed = (table["status"] == "deployed").to_numpy()
    price = (deployed & (table["type"] != DIRECTION).to_numpy()).nonzero()[0]
    anyone = deployed.nonzero()[0]
    return int(price[0]) if len(price) else int(anyone[0]) if len(anyone) else 0


def validation_chart(model_id: str) -> tuple[go.Figure | None, str | None]:
    """The walk-forward validation figure (a direction model's: its reliability diagram), or None and why not
    (a model file that fails its integrity check)."""
    model = registry.get_model(model_id)
    if model["model_type"] == DIRECTION:
        return reliability_figure(model["metrics"]["reliability"]), None
    try:
        return validation_figure(registry.validation_predictions(model_id)), None
    except ModelIntegrityError as exc:
        return None, str(exc)


def family_table(model_id: str, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Ancestors (oldest first), the model itself and its children, one row each with the reason it was
    made: a table shows reasons literally (they are user text), where markdown would render them."""
    chain = registry.lineage(model_id, db=db)
    rows = [{"relation": "ancestor" if m["model_id"] != model_id else "this model", **m} for m in chain]
    rows += [{"relation": "child", **m} for m in registry.children(model_id, db=db)]
    return pd.DataFrame(rows, columns=["relation", "model_id", "status", "created_at", "reason"]) if rows else \
        pd.DataFrame(columns=["relation", "model_id", "status", "created_at", "reason"])


def model_facts(model: dict) -> pd.DataFrame:
    """What a reader asks about one model, as (fact, value) rows: data windows, signature, artifact, features."""
    metrics = model["metrics"]
    facts = {
        "ticker / type / version": f"{model['symbol']} · {model['model_type']} · v{model['version']}",
        "trained on": f"{model['train_start']} → {model['train_end']} ({metrics.get('data_source', '')})",
        "validation window": f"{metrics['validation_start']} → {metrics['validation_end']} "
                             f"({metrics['n']} days, {len(metrics['fold_skill'])} walk-forward folds)",
        # a direction model's fold_skill is its accuracy minus the better baseline's, in points (certification's)
        ("per-fold accuracy edge over the better baseline" if metrics.get("kind") == DIRECTION
         else "per-fold skill vs naive"): ", ".join(
            f"{100 * s:+.1f} pts" if metrics.get("kind") == DIRECTION else f"{s:+.3f}" for s in metrics["fold_skill"]),
        "feature signature": model["feature_signature"],
        "artifact": f"{model['artifact_path']} (sha256 {model['artifact_sha256']})",
        "features": ", ".join(model["features"]),
        "parameters": json.dumps(model["params"], sort_keys=True),
    }
    return pd.DataFrame({"fact": list(facts), "value": list(facts.values())})


def validation_evidence(metrics: Mapping, baseline: str = "naive") -> tuple[str, str]:
    """(words, colour) for a model's validation skill against `baseline`: "beats" or "loses to" only when the
    certification's block-bootstrap 95% interval of the skill excludes 0 (a +0.001 on 250 days is luck as often
    as not); "on par" when it includes 0; "untested" before a certification has run."""
    ci = (metrics.get("certification") or {}).get("bootstrap_ci")
    if not ci:
        return "not yet tested: certify it for a 95% interval", "gray"
    low, high = ci
    interval = f"95% CI {low:+.3f} to {high:+.3f}"
    if low > 0:
        return f"beats {baseline}, {interval}", "green"
    if high < 0:
        return f"loses to {baseline}, {interval}", "red"
    return f"on par with {baseline}, {interval}", "gray"


def _metric_words(words: str) -> tuple[str, str]:
    """A metric card's delta is one short line: the verdict there, the interval (or what to do) in its tooltip."""
    verdict, _, rest = words.partition(", " if ", " in words else ": ")
    return verdict, rest


def headline(model: dict) -> list[dict[str, Any]]:
    """The four numbers above a model's tabs, each the keyword arguments of one `st.metric`."""
    metrics = model["metrics"]
    if metrics.get("kind") == DIRECTION:
        return direction_headline(model)
    words, color = validation_evidence(metrics)
    verdict, detail = _metric_words(words)
    return [
        {"label": "Status", "value": model["status"]},
        {"label": "Validation MAE", "value": f"${metrics['mae']:.3f}", "delta": f"naive ${metrics['naive']['mae']:.3f}",
         "delta_color": "off", "delta_arrow": "off"},
        {"label": "Skill vs naive", "value": f"{metrics['skill']:+.3f}", "delta": verdict, "delta_color": color,
         "delta_arrow": "off", "help": f"1 - MAE / naive MAE on the walk-forward validation days: {words}. The words "
                                        "follow the certification's block-bootstrap 95% interval of the skill"},
        {"label": "Interval coverage", "value": f"{metrics['interval_coverage_empirical']:.0%}",
         "delta": f"nominal {metrics['interval_coverage_nominal']:.0%}", "delta_color": "off", "delta_arrow": "off"},
    ]


def direction_headline(model: dict) -> list[dict[str, Any]]:
    """A direction model's four numbers: status, accuracy against the better baseline, Brier skill, calibration error.
    The words under the Brier skill follow the certification's interval of the error-rate skill (`validation_evidence`)."""
    metrics = model["metrics"]
    best = metrics["baselines"][metrics["best_baseline"]]
    words, color = validation_evidence(metrics, "the baseline")
    verdict, _ = _metric_words(words)
    return [
        {"label": "Status", "value": model["status"]},
        {"label": "Validation accuracy", "value": f"{metrics['accuracy']:.1%}", "delta": f"baseline {best['accuracy']:.1%}",
         "delta_color": "off", "delta_arrow": "off"},
        {"label": f"Brier skill vs {metrics['best_baseline']}", "value": f"{metrics['skill']:+.4f}", "delta": verdict,
         "delta_color": color, "delta_arrow": "off",
         "help": f"1 - Brier / baseline Brier on validation. Error rate: {words}. The words follow the "
                 "certification's block-bootstrap 95% interval of the error-rate skill (1 - misses / baseline misses)"},
        {"label": "Calibration error (ECE)", "value": f"{metrics['ece']:.3f}",
         "delta": f"{metrics['ece_uncalibrated']:.3f} before calibration", "delta_color": "off", "delta_arrow": "off"},
    ]


def skill_warning(model: dict) -> str | None:
    """The warning for a model that does not beat the naive baseline on validation, else None."""
    metrics = model["metrics"]
    if metrics["skill"] > 0:
        return None
    if metrics.get("kind") == DIRECTION:
        best = metrics["baselines"][metrics["best_baseline"]]
        return (f"This direction model does not beat the better baseline ({metrics['best_baseline']}) on validation: "
                f"Brier {metrics['brier']:.4f} vs {best['brier']:.4f}, accuracy {metrics['accuracy']:.1%} vs "
                f"{best['accuracy']:.1%}. 50-53 % is normal on daily prices.")
    return (f"This model does not beat the naive baseline (tomorrow = today) on validation: "
            f"MAE ${metrics['mae']:.3f} vs ${metrics['naive']['mae']:.3f}.")


def certification_caption(certification: dict) -> str:
    """When and how a stored certification was computed, for the caption above its checklist."""
    return (f"Computed {certification['computed_at'][:16].replace('T', ' ')} UTC in {certification['seconds']:.1f} s "
            "on the walk-forward validation of the training window; all five checks must pass to deploy without override.  \n"
            + runbook_caption("certification", "What a failed check means and what to do"))


def drift_verdict(report_data: dict) -> list[tuple[str, str]]:
    """A stored drift check (`DriftReport.to_dict()`) in words, as (Streamlit element, markdown) in drawing order:
    the heading, the verdict (an error when the model needs retraining, else a success), its reasons, the pointer."""
    report = DriftReport.from_dict(report_data)
    needs_retrain, retrain_reason = should_retrain(report)
    return [
        ("markdown", f"**Drift check as of {report.as_of}:** severity **{report.severity}** "
                     f"({report.dataset['n_drifted']} of {report.dataset['n_features']} features drifted)"),
        ("error", "Drift detected: model needs retraining") if needs_retrain
        else ("success", f"No retraining needed: {escape_markdown(retrain_reason)}"),
        ("markdown", "\n".join(f"- {escape_markdown(r)}" for r in report.reasons) if needs_retrain else ""),
        ("caption", "Details, distributions and history on the Drift page."),
    ]


def deep_link_state(model_id: str, session: Mapping[str, Any], db: sqlite_utils.Database | None = None,
                    ticker: str = "", symbols: Sequence[str] = ()) -> dict[str, str]:
    """Session state for a deep link on the page's first run: ?model=<id> selects the linked model (with its
    ticker, any status); else ?ticker=<symbol> (one of `symbols`) selects that ticker. `mm_linked` is set so
    later runs (`session` has it) leave the user's choices alone."""
    if "mm_linked" in session:
        return {}
    linked = registry.get_model(model_id, db=db, missing_ok=True) if model_id else None
    if linked is None:
        ticker = (ticker or "").strip().upper()
        return {"mm_linked": "", **({"mm_symbol": ticker} if ticker in symbols else {})}
    return {"mm_linked": linked["model_id"], "mm_symbol": linked["symbol"], "mm_status": "All",
            "mm_model": linked["model_id"]}


def rollback_help(symbol: str, back_to: str | None) -> str:
    """The Roll back button's help: the model it would redeploy, or why there is none."""
    return f"Redeploy {back_to}" if back_to else f"{symbol} has no earlier deployed version to go back to"


def rollback_button(symbol: str, db: sqlite_utils.Database | None = None, kind: str = "price") -> dict[str, Any]:
    """The Roll back button's state (keyword arguments of `st.button`): disabled with nothing to go back to, and its help."""
    back_to = registry.rollback_candidate(symbol, db=db, kind=kind)
    return {"disabled": back_to is None, "help": rollback_help(symbol, back_to)}


def metrics_download(model: dict) -> dict[str, str]:
    """The Details tab's download (keyword arguments of `st.download_button`): the validation metrics as indented JSON."""
    return {"data": json.dumps(model["metrics"], indent=2), "file_name": f"{model['model_id']}_metrics.json",
            "mime": "application/json"}


def number_columns(number_column: Callable[..., Any]) -> dict[str, Any]:
    """The models table's column config: `number_column` (the page passes `st.column_config.NumberColumn`; core
    never imports streamlit) with each column's format and help from TABLE_FORMATS."""
    return {column: number_column(format=fmt, help=text) for column, (fmt, text) in TABLE_FORMATS.items()}


GATE_FORMATS = {  # the Retrain Now gate table (`core.lifecycle.retrain_summary`): $ like the rest of the page, margin in %
    "challenger MAE $": ("$%.3f", "MAE of the challenger on the holdout days"),
    "champion MAE $": ("$%.3f", "MAE of the deployed model on the same days"),
    "naive MAE $": ("$%.3f", "MAE of naive (tomorrow = today) on the same days"),
    "margin": ("percent", "How much lower than the champion's the challenger's MAE must be"),
    "holdout days": ("%d", "Days out of sample for both models"),
}


def gate_columns(number_column: Callable[..., Any]) -> dict[str, Any]:
    """The gate table's column config (`number_column`: the page passes `st.column_config.NumberColumn`)."""
    return {column: number_column(format=fmt, help=text) for column, (fmt, text) in GATE_FORMATS.items()}


def opening_tab(action: str | None) -> str | None:
    """The tab the page opens on: Retraining for Drift's "Retrain Now" link (?action=retrain), else the first."""
    return "Retraining" if action == "retrain" else None


def job_spinner(job_id: int, approved: bool) -> str:
    """What the page says while a queued job is approved (retrained) or declined."""
    return f"Retraining for job {job_id}…" if approved else f"Declining job {job_id}…"


TABS = ["Details", "Certification", "Retraining", "Validation", "Lineage", "Artifacts", "Audit log"]


def artifacts_caption(has_artifacts: bool) -> str:
    """The caption under a model's artifact downloads."""
    if has_artifacts:
        return ("Written at registration; rewrite after a certification so the model card shows it. "
                "Details on the Explainability page.")
    return "No explainability artifacts for this model yet: write them below."


OVERRIDE_WARNING = "This model is not certified: deploying it needs an override, written to the audit log with your reason."
NO_CERTIFICATION = ("Certification not computed for this model yet: run it below (a few seconds; the permutation test "
                    "refits the model).")
RETRAIN_STOPPED = "Retraining stopped on a database fault; the deployed model is unchanged"
RETRAIN_FAILED = "Retraining failed; the deployed model is unchanged"
DRIFT_CHECK_HELP = "Training window vs the last trading days; stored in the history"
EMPTY_QUEUE = "Approval queue: empty (automatic retrains on critical drift wait here for a person)."


def deployable(model: dict) -> bool:
    """Whether Deploy can act on `model`: not already live, and of a type with a serving path (price or direction)."""
    return model["status"] != "deployed" and model["model_type"] in DEPLOYABLE_TYPES


def deploy_help(model: dict) -> str | None:
    """Why Deploy is greyed out, in words (None when it is not)."""
    if model["status"] == "deployed":
        return "This model is already deployed."
    if model["model_type"] not in DEPLOYABLE_TYPES:
        return f"A {model['model_type']} model has no serving path, so it cannot be deployed."
    return None
