"""Each model's explainability artifacts: importance (JSON + CSV), the SHAP summary figure and the model card.

`write_model_artifacts(model_id)` computes SHAP and permutation importance through `core.explain`
and writes the files under `models/<model_id>/` (the card last: a folder without a card had its
artifacts interrupted); `core.lifecycle` calls it after each registration and again after a
certification, a deploy or a rollback, so the card states the current status. The card is built
from the registry row alone (`model_card_markdown`). `core.explain.artifact_files` lists what exists.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from core.config import get_settings
from core.explain_charts import shap_beeswarm_figure
from core.explain import (CARD_FILE, IMPORTANCE_CSV, IMPORTANCE_JSON, SHAP_WINDOW, SUMMARY_HTML, SUMMARY_PNG, Explanation,
                          explain_window, global_importance, permutation_importance_frame)
from core.explain_store import save_window
from core.figure_export import RenderUnavailable, render_png
from core.model_files import atomic_write, model_folder
from core.model_view import validation_evidence
from core.registry import get_model
from core.store import get_db, utc_now
from core.direction import DIRECTION
from core.training import MODEL_LABELS

log = logging.getLogger(__name__)

# (SHAP units, permutation importance's meaning), by "is a direction model"
IMPORTANCE_UNITS = {False: ("next-day log return", "rise in MAE (log return) when the feature is shuffled"),
                    True: ("log-odds of up", "rise in log loss of the calibrated P(up) when the feature is shuffled")}


def _write_png(fig, path: Path) -> None:
    """Render through kaleido, bounded in time (core.figure_export); raises RenderUnavailable."""
    image = render_png(fig)
    atomic_write(path, lambda tmp: tmp.write_bytes(image))


def _write_summary_figure(fig, folder: Path) -> tuple[str, str]:
    """(file name, note): a PNG through kaleido, or a self-contained HTML when asked or when kaleido fails."""
    note = ""
    if get_settings().explain_image_format == "png":
        try:
            _write_png(fig, folder / SUMMARY_PNG)
            (folder / SUMMARY_HTML).unlink(missing_ok=True)
            return SUMMARY_PNG, "static PNG rendered by kaleido (headless Chromium)"
        except RenderUnavailable as exc:  # no Chromium, kaleido failed or timed out: keep the figure, as HTML
            note = f"interactive HTML instead of PNG: {exc}"
            log.warning("summary figure of %s: %s", folder.name, note)
    else:
        note = "HTML because MLSA_EXPLAIN_IMAGE_FORMAT is not 'png'"
    atomic_write(folder / SUMMARY_HTML, lambda tmp: fig.write_html(str(tmp), include_plotlyjs=True, full_html=True))
    (folder / SUMMARY_PNG).unlink(missing_ok=True)
    return SUMMARY_HTML, note


def importance_table(explanation: Explanation, permutation: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| and permutation importance per feature, ranked by SHAP."""
    shap_part = global_importance(explanation.shap).rename_axis("feature").reset_index()
    shap_part["shap_rank"] = np.arange(1, len(shap_part) + 1)
    table = shap_part.merge(permutation, on="feature", how="left")
    table["permutation_rank"] = table["permutation_mean"].rank(ascending=False, method="min").astype(int)
    return table


def write_model_artifacts(model_id: str, db: sqlite_utils.Database | None = None, refresh: bool = False) -> dict[str, Path]:
    """Write importance (JSON + CSV), the summary figure and the model card into the model's folder.

    The card is always rebuilt from the registry's current row, so calling this again after a
    certification updates it. Importance and figure are reused when they were written for this very
    artifact and window size (a card-only rewrite takes milliseconds); `refresh=True` recomputes them.
    Returns name -> path of the files written or reused.
    """
    db = db or get_db()
    row = get_model(model_id, db=db)
    folder = model_folder(model_id)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if row["model_type"] == "naive":
        card = model_card_markdown(row, None, None, None)
    else:
        document = None if refresh else _reusable_importance(row, folder)
        if document is None:
            document = _write_importance(model_id, row, folder, db)
        importance = pd.DataFrame(document["features"])
        written.update({"importance_json": folder / IMPORTANCE_JSON, "importance_csv": folder / IMPORTANCE_CSV,
                        "summary_figure": folder / document["summary_figure"], "shap_window": folder / SHAP_WINDOW})
        card = model_card_markdown(row, importance, document["window"], document["summary_figure"],
                                   document.get("summary_figure_note", ""))
    atomic_write(folder / CARD_FILE, lambda tmp: tmp.write_text(card))
    written["model_card"] = folder / CARD_FILE
    log.info("%s: explainability artifacts written (%s)", model_id, ", ".join(p.name for p in written.values()))
    return written


def _reusable_importance(row: dict, folder: Path) -> dict | None:
    """The stored importance document if it describes this artifact and the configured window, else None."""
    try:
        document = json.loads((folder / IMPORTANCE_JSON).read_text())
    except (OSError, ValueError):
        return None
    current = (document.get("artifact_sha256") == row["artifact_sha256"]
               and document.get("window", {}).get("days") == get_settings().explain_window_days
               and (folder / document.get("summary_figure", "-")).exists() and (folder / IMPORTANCE_CSV).exists()
               and (folder / SHAP_WINDOW).exists())
    return document if current else None


def _write_importance(model_id: str, row: dict, folder: Path, db: sqlite_utils.Database) -> dict:
    """Compute SHAP + permutation importance on the model's window; write the JSON, CSV, summary figure and the
    window itself (`SHAP_WINDOW`: what the Explainability page opens on without computing)."""
    explanation = explain_window(model_id, db=db)
    save_window(explanation, row["artifact_sha256"], folder / SHAP_WINDOW)
    permutation = permutation_importance_frame(model_id, explanation.frame, db=db)
    importance = importance_table(explanation, permutation)
    window = {"start": f"{explanation.frame.index[0]:%Y-%m-%d}", "end": f"{explanation.frame.index[-1]:%Y-%m-%d}",
              "rows": len(explanation.frame), "days": get_settings().explain_window_days}
    figure = shap_beeswarm_figure(explanation.shap.values, explanation.X, explanation.shap.feature_names,
                                  title=f"SHAP summary: {model_id} ({window['start']} to {window['end']})",
                                  units=IMPORTANCE_UNITS[explanation.is_direction][0])
    figure_name, figure_note = _write_summary_figure(figure, folder)
    document = {
        "model_id": model_id, "written_at": utc_now(), "artifact_sha256": row["artifact_sha256"],
        "units": "mean |SHAP| in {}; permutation = {}".format(*IMPORTANCE_UNITS[explanation.is_direction]),
        "window": window, "base_value": explanation.shap.base_value, "summary_figure": figure_name,
        "summary_figure_note": figure_note, "features": importance.to_dict("records"),
    }
    atomic_write(folder / IMPORTANCE_CSV, lambda tmp: importance.to_csv(tmp, index=False))
    atomic_write(folder / IMPORTANCE_JSON, lambda tmp: tmp.write_text(json.dumps(document, indent=2)))
    return document


def certification_status(row: dict) -> list[str]:
    """Markdown lines: the stored certification verdict and its checks, or "not computed" when none ran."""
    details = row["metrics"].get("certification")
    if not details:
        return ["Not computed: no certification has been run for this model."]
    certified = details.get("certified", bool(row.get("certified"))) if isinstance(details, dict) else bool(row.get("certified"))
    lines = [f"**{'Certified' if certified else 'Not certified'}**"
             + (f" (computed {str(details['computed_at'])[:16].replace('T', ' ')} UTC)" if details.get("computed_at") else "")]
    for check in details.get("checks", []) if isinstance(details, dict) else []:
        if isinstance(check, dict) and "label" in check:
            lines.append(f"- {'pass' if check.get('passed') else 'FAIL'}: {check['label']} = {_fmt(check.get('value'))} "
                         f"(target {check.get('comparison', '')} {_fmt(check.get('target'))})")
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " to ".join(_fmt(v) for v in value)
    return str(value)


def _direction_metric_lines(m: dict) -> list[str]:
    """A direction model's walk-forward metrics beside both baselines and logistic regression."""
    columns = [("model", m), ("always up", m["baselines"]["always_up"]), ("same as today", m["baselines"]["persistence"]),
               ("logistic regression", m["reference"]["logit"])]
    lines = ["", "## Metrics vs the baselines (walk-forward validation)", "",
             "| metric | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key in ("accuracy", "balanced_accuracy", "roc_auc", "log_loss", "brier"):
        lines.append(f"| {key} | " + " | ".join(f"{values[key]:.4f}" for _, values in columns) + " |")
    verdict, _ = validation_evidence(m, "the baseline")
    return [*lines, "", f"Brier skill vs {m['best_baseline']}: **{m['skill']:+.4f}** (error-rate skill: {verdict}); "
                        f"calibration error "
                        f"(ECE) {m['ece_uncalibrated']:.3f} before, {m['ece']:.3f} after {m['calibration']}."]


def model_card_markdown(row: dict, importance: pd.DataFrame | None, window: dict | None, figure_name: str | None,
                        figure_note: str = "") -> str:
    """The model card (Markdown) from the registry row's stored metrics and the importance table."""
    m = row["metrics"]
    naive = m.get("naive", {})
    label = MODEL_LABELS.get(row["model_type"], row["model_type"])
    lines = [
        f"# Model card: {row['model_id']}", "",
        "## Purpose",
        f"Forecast the next trading day's close of **{row['symbol']}** as a next-day log return, converted to a price "
        f"(with a conformal interval). {label}, version {row['version']}, status **{row['status']}**, registered "
        f"{row['created_at'][:19].replace('T', ' ')} UTC ({row['reason']}). For decision support; not investment advice.", "",
        "## Data window",
        f"- Training: {row['train_start']} to {row['train_end']} ({m.get('data_source') or 'unknown source'})",
        f"- Walk-forward validation: {m.get('validation_start')} to {m.get('validation_end')} ({m.get('n')} days, "
        f"{len(m.get('fold_skill', []))} folds)",
    ]
    if window:
        lines.append(f"- Explained window (SHAP and permutation importance): {window['start']} to {window['end']} "
                     f"({window['rows']} days, the last days of the training window)")
    features = row["features"]
    lines += ["", "## Features", (f"{len(features)} features: " + ", ".join(f"`{f}`" for f in features)) if features
              else "None: the naive baseline predicts a zero log return (tomorrow's close = today's).", ""]
    if row["model_type"] == DIRECTION:
        lines[3] = (f"Say whether **{row['symbol']}** closes above today's close on the next trading day, as a calibrated "
                    f"P(up). Direction classifier ({row['params'].get('estimator')}), version {row['version']}, status "
                    f"**{row['status']}**. For decision support; not investment advice.")
        return "\n".join([*lines, *_direction_metric_lines(m), "", "## Certification", *certification_status(row), "",
                          *_importance_lines(importance, figure_name, figure_note, direction=True)]) + "\n"
    lines += ["## Metrics vs naive (walk-forward validation)", "", "| metric | model | naive |", "|---|---|---|"]
    for key, name, fmt in (("mae", "MAE ($)", "{:.4f}"), ("rmse", "RMSE ($)", "{:.4f}"), ("mape", "MAPE (%)", "{:.3f}"),
                           ("directional_accuracy", "Directional accuracy (%)", "{:.1f}")):
        model_value, naive_value = m.get(key), naive.get(key)
        lines.append(f"| {name} | {fmt.format(model_value) if model_value is not None else 'n/a'} | "
                     f"{fmt.format(naive_value) if naive_value is not None else 'n/a'} |")
    if m.get("skill") is not None:
        lines += ["", f"Skill (1 - MAE/MAE_naive): **{m['skill']:+.4f}** ({validation_evidence(m)[0]}); "
                  f"per fold: {', '.join(f'{s:+.3f}' for s in m.get('fold_skill', []))}."]
    if m.get("interval_coverage_nominal") is not None:
        lines.append(f"Interval coverage: {m['interval_coverage_empirical']:.0%} on the last fold vs "
                     f"{m['interval_coverage_nominal']:.0%} nominal.")
    lines += ["", "## Certification", *certification_status(row), ""]
    lines += ["## Known limitations",
              "- Daily returns are close to unpredictable; a skill near 0 means the model is about as good as naive.",
              "- Trained on one ticker's own price and volume history only: no news, fundamentals or other markets.",
              "- Trees cannot extrapolate: inputs outside the training range (new regimes) get edge-of-range predictions.",
              "- Validation metrics come from the walk-forward folds; live performance can differ (see drift monitoring).",
              "- Importance is computed on the last training days, which the final model has seen: it describes the model, "
              "not proof that a feature causes returns. Correlated features (returns, moving averages) share credit.", ""]
    return "\n".join([*lines, *_importance_lines(importance, figure_name, figure_note)]) + "\n"


def _importance_lines(importance: pd.DataFrame | None, figure_name: str | None, figure_note: str,
                      direction: bool = False) -> list[str]:
    """The card's top-10 importance table: mean |SHAP| in log return (or log-odds) and permutation importance."""
    lines = ["## Feature importance, top 10"]
    if importance is None:
        return [*lines, "Not applicable: the naive baseline uses no features."]
    shap_units, permutation_units = ("log-odds", "log loss rise") if direction else ("log return", "MAE rise")
    lines += ["", f"| rank | feature | mean abs SHAP ({shap_units}) | permutation ({permutation_units}) |", "|---|---|---|---|"]
    for record in importance.head(10).to_dict("records"):
        lines.append(f"| {record['shap_rank']} | `{record['feature']}` | {record['mean_abs_shap']:.3e} | "
                     f"{record['permutation_mean']:.3e} ± {record['permutation_std']:.1e} |")
    if direction:
        lines += ["", "SHAP explains the calibrated model's underlying classifiers (the mean log-odds of its members "
                  "before calibration); calibration then maps that raw P(up) to the P(up) served."]
    return [*lines, "", f"Summary figure: `{figure_name}`" + (f" ({figure_note})" if figure_note else "")
            + f"; full table: `{IMPORTANCE_CSV}`, `{IMPORTANCE_JSON}`."]

