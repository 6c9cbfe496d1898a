"""Certification: runs the five robustness checks on a registered model and stores the verdict with it (via the registry).

A model is certified when all five hold on the walk-forward validation of its own training window:

1. **CV mean skill**: the mean over walk-forward folds of skill = 1 - MAE_model / MAE_naive (in $)
   is at least `cert_min_skill`, and at most `cert_max_skill` (a daily stock model far above naive
   is almost surely leaking the future, not skilful);
2. **CV skill std**: the standard deviation of the fold skills is at most `cert_max_skill_std`;
3. **permutation test**: the model beats the same model refitted on targets that were circularly
   shifted against the features (p < 0.05; see `permutation_skill_test`);
4. **block-bootstrap CI**: the lower bound of the 95% circular-block-bootstrap interval of the skill
   is at least `cert_min_ci_lower`;
5. **latency**: the P95 of the serving path (`core.predict.feature_row` + `forecast`, what `predict`
   does for one request) is at most `cert_max_latency_p95_ms`.

A direction model (`core.direction`) runs the same five in classifier terms (`_direction_checks`): the CV
mean accuracy minus the better baseline's (always up / same as today) and its std over the folds, a
permutation test of the labels (sklearn's `permutation_test_score` on walk-forward folds), the block-
bootstrap CI of 1 - misses / the baseline's misses, and the P95 of `forecast_direction`; thresholds are
the `cert_dir_*` settings. It fails honestly when the model does not beat the better baseline.

Checks 1, 2 and 4 read the out-of-sample predictions saved at registration (no refit); check 3
refits the model (with fewer trees, see `REFIT_OVERRIDES`); check 5 times real predictions. The result
is stored with the model through `core.registry.set_certification`; `core.lifecycle.certify_with_card`
then rewrites the model card so it shows the result. The statistics are `core.certification_stats`. Certification depends on the model
only (its training window and artifact), never on the clock, so no `as_of` is needed.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from core.certification_stats import (PERMUTATION_ALPHA, REFIT_OVERRIDES, Progress,
                                      block_bootstrap_skill_ci, default_block_length, fold_skills, permutation_skill_test)
from core.cluster import executor
from core.config import get_settings
from core.direction import DIRECTION, forecast_direction, make_classifier
from core.direction_stats import label_permutation_test
from core.features import (FEATURE_COLUMNS, TARGET, WARMUP_DAYS, build_features, check_feature_frame, direction_labels,
                           training_rows)
from core.market import load_prices
from core.predict import feature_row, forecast
from core.registry import get_model, load_model, set_certification, validation_predictions
from core.store import get_db, utc_now

log = logging.getLogger(__name__)

LATENCY_CALLS = 40


@dataclass(frozen=True)
class Check:
    """One certification check: what was measured, against which target, and whether it passed."""

    key: str
    label: str
    value: float
    comparison: str  # ">=", "<=", "<" or "in": how `value` must relate to `target`
    target: float | list[float]
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Certification:
    model_id: str
    certified: bool
    checks: list[Check]
    seconds: float
    computed_at: str
    extras: dict[str, Any] = field(default_factory=dict)

    def to_details(self) -> dict[str, Any]:
        """The JSON-able record stored beside the model (metrics_json["certification"])."""
        return {"certified": self.certified, "checks": [asdict(c) for c in self.checks], "seconds": self.seconds,
                "computed_at": self.computed_at, **self.extras}


# --- skill on price errors ----------------------------------------------------------------------------


def serving_latency_ms(model_id: str, n_calls: int = LATENCY_CALLS, db: sqlite_utils.Database | None = None) -> np.ndarray:
    """Wall time (ms) of the serving path for `model_id` on its last `n_calls` training days.

    The same work `predict` does for one request (price history from SQLite, features, verified
    model, forecast), without logging a prediction; the first call includes loading the artifact.
    """
    db = db or get_db()
    model = get_model(model_id, db=db)
    days = load_prices(model["symbol"], end=model["train_end"], db=db).index[-n_calls:]
    timings = np.empty(len(days))
    for i, day in enumerate(days):
        started = time.perf_counter()
        if model["model_type"] == DIRECTION:  # P(up) with its interval of belief, from the verified model
            forecast_direction(model_id, day, db=db)
        else:
            _, last_close, features, _ = feature_row(model["symbol"], day, db)
            forecast(load_model(model_id, db=db), last_close, features)
        timings[i] = (time.perf_counter() - started) * 1000
    return timings


# --- the certification --------------------------------------------------------------------------------

def training_window(model: dict, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """The feature rows the model was trained on, rebuilt from prices exactly as `training_frame` did."""
    prices = load_prices(model["symbol"], end=model["train_end"], db=db)
    start = prices.index.searchsorted(pd.Timestamp(model["train_start"]))
    window_days = len(prices) - start - 1
    rows = training_rows(build_features(prices.iloc[-(window_days + WARMUP_DAYS + 1):], model["symbol"]))
    return rows.loc[pd.Timestamp(model["train_start"]):]


def _check(key: str, label: str, value: float, comparison: str, target, detail: str = "") -> Check:
    if comparison == ">=":
        passed = value >= target
    elif comparison == "<=":
        passed = value <= target
    elif comparison == "<":
        passed = value < target
    else:  # "in": a closed range
        passed = target[0] <= value <= target[1]
    return Check(key, label, float(value), comparison, target, bool(passed and np.isfinite(value)), detail)


def certify(
    model_id: str,
    progress: Progress | None = None,
    store: bool = True,
    db: sqlite_utils.Database | None = None,
) -> Certification:
    """Run the five checks on `model_id`, store the result with the model (unless `store=False`)."""
    db = db or get_db()
    started = time.perf_counter()
    report = progress or (lambda _fraction, _message: None)
    model = get_model(model_id, db=db)
    checks, extras = (_direction_checks if model["model_type"] == DIRECTION else _price_checks)(model, report, db)
    result = Certification(
        model_id=model_id, certified=all(c.passed for c in checks), checks=checks,
        seconds=round(time.perf_counter() - started, 2), computed_at=utc_now(), extras=extras,
    )
    if store:
        set_certification(model_id, result.certified, result.to_details(), db=db)
    report(1.0, "Certified" if result.certified else "Not certified")
    log.info("certification of %s: %s in %.1f s (%s)", model_id, result.certified, result.seconds,
             ", ".join(f"{c.key}={'pass' if c.passed else 'FAIL'}" for c in checks))
    return result


def _std_check(key: str, label: str, values: np.ndarray, limit: float, what: str) -> Check:
    """Check 2 of either kind: the spread of a per-fold score over the walk-forward folds (NaN, a fail, for one fold)."""
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return _check(key, label, spread, "<=", limit, f"standard deviation of the {what} (ddof=1)")


def _bootstrap_check(label: str, ci: tuple[float, float], limit: float, n_days: int, what: str) -> Check:
    """Check 4 of either kind: the lower bound of a block-bootstrap CI of skill (`block_bootstrap_skill_ci`)."""
    return _check("bootstrap_ci_lower", label, ci[0], ">=", limit,
                  f"{what}circular block bootstrap, block {default_block_length(n_days)} days: "
                  f"[{ci[0]:+.4f}, {ci[1]:+.4f}] over {n_days} days")


def _latency_check(model_id: str, label: str, what: str, db: sqlite_utils.Database) -> Check:
    """Check 5 of either kind: the P95 of `serving_latency_ms` against `cert_max_latency_p95_ms`."""
    latency = serving_latency_ms(model_id, db=db)
    return _check("latency_p95_ms", label, float(np.percentile(latency, 95)), "<=", get_settings().cert_max_latency_p95_ms,
                  f"{len(latency)} calls of {what}, median {np.median(latency):.1f} ms")


def _price_checks(model: dict, report: Progress, db: sqlite_utils.Database) -> tuple[list[Check], dict[str, Any]]:
    """The five checks of a price model, on skill = 1 - MAE / MAE_naive (see the module's docstring)."""
    settings, model_id = get_settings(), model["model_id"]
    report(0.02, "Reading the walk-forward validation")
    validation = validation_predictions(model_id)
    skills = fold_skills(validation)
    mean_skill = float(np.mean(skills))

    report(0.05, "Block bootstrap of the validation skill")
    model_error = (validation["predicted_close"] - validation["actual_close"]).abs().to_numpy()
    naive_error = (validation["last_close"] - validation["actual_close"]).abs().to_numpy()
    ci_low, ci_high = block_bootstrap_skill_ci(model_error, naive_error)

    report(0.08, "Rebuilding the training window")
    rows = training_window(model, db=db)
    with executor() as tasks:  # the refits run on the Dask cluster when MLSA_DASK_SCHEDULER names one
        refits = None if tasks.remote else (lambda f, m: report(0.1 + 0.8 * f, m))  # a page's bar (a no-op without one)
        permutation = tasks.submit(
            f"certify-refits {model_id}", permutation_skill_test,
            check_feature_frame(rows, model["features"] or FEATURE_COLUMNS), rows[TARGET].to_numpy(),
            rows["close"].to_numpy(), model["model_type"], model["params"], progress=refits,
        ).result()

    report(0.92, "Timing the serving path")

    checks = [
        _check("cv_mean_skill", "CV mean skill vs naive", mean_skill, "in",
               [settings.cert_min_skill, settings.cert_max_skill],
               f"{len(skills)} walk-forward folds: " + ", ".join(f"{s:+.3f}" for s in skills)),
        _std_check("cv_skill_std", "CV skill std (stability)", skills, settings.cert_max_skill_std, "fold skills"),
        _check("permutation_p", "Permutation test p-value", permutation.p_value, "<", PERMUTATION_ALPHA,
               f"skill {permutation.observed_skill:+.4f} vs shifted-target refits (mean "
               f"{np.mean(permutation.null_skills):+.4f}, 95th pct {np.quantile(permutation.null_skills, 0.95):+.4f})"),
        _bootstrap_check("Skill 95% CI lower bound", (ci_low, ci_high), settings.cert_min_ci_lower, len(validation), ""),
        _latency_check(model_id, "Serving latency P95 (ms)", "the serving path", db),
    ]
    return checks, {"permutation": permutation.summary(), "bootstrap_ci": [ci_low, ci_high],
                    "refit_overrides": REFIT_OVERRIDES.get(model["model_type"], {})}


def _direction_checks(model: dict, report: Progress, db: sqlite_utils.Database) -> tuple[list[Check], dict[str, Any]]:
    """The five checks in classifier terms: accuracy edge over the better baseline (mean and std over the folds),
    a permutation test of the labels, the block-bootstrap CI of the error-rate skill, the serving latency P95."""
    settings, model_id, metrics = get_settings(), model["model_id"], model["metrics"]
    report(0.02, "Reading the walk-forward validation")
    validation = validation_predictions(model_id)
    edges = np.asarray(metrics["fold_skill"], dtype=float)  # per fold: accuracy - the better baseline's accuracy
    report(0.05, "Block bootstrap of the validation error rate")
    label = validation["label"].to_numpy()
    model_miss = ((validation["p_up"].to_numpy() >= 0.5) != label).astype(float)
    baseline_miss = ((validation[f"p_{metrics['best_baseline']}"].to_numpy() >= 0.5) != label).astype(float)
    ci_low, ci_high = block_bootstrap_skill_ci(model_miss, baseline_miss)  # skill = 1 - misses / baseline misses
    report(0.08, "Rebuilding the training window: refits on shuffled labels")
    rows = training_window(model, db=db)
    params = {k: v for k, v in model["params"].items() if k != "estimator"}
    permutation = label_permutation_test(make_classifier(model["params"]["estimator"], params),
                                         check_feature_frame(rows, model["features"]), direction_labels(rows))
    report(0.92, "Timing P(up) requests")
    checks = [
        _check("cv_accuracy_edge", "CV mean accuracy minus the better baseline's", float(np.mean(edges)), "in",
               [settings.cert_dir_min_accuracy_edge, settings.cert_dir_max_accuracy_edge],
               f"{len(edges)} walk-forward folds vs {metrics['best_baseline']}: " + ", ".join(f"{e:+.3f}" for e in edges)),
        _std_check("cv_accuracy_std", "CV accuracy edge std (stability)", edges, settings.cert_dir_max_accuracy_std,
                   "fold edges"),
        _check("permutation_p", "Label permutation test p-value", permutation["p_value"], "<", PERMUTATION_ALPHA,
               f"walk-forward accuracy {permutation['observed_accuracy']:.3f} vs {permutation['n_permutations']} refits "
               f"on shuffled labels (mean {permutation['null_mean']:.3f}, 95th pct {permutation['null_q95']:.3f})"),
        _bootstrap_check("Error-rate skill 95% CI lower bound", (ci_low, ci_high), settings.cert_dir_min_ci_lower,
                         len(validation), f"1 - misses / misses of {metrics['best_baseline']}, "),
        _latency_check(model_id, "P(up) latency P95 (ms)", "forecast_direction", db),
    ]
    return checks, {"permutation": permutation, "bootstrap_ci": [ci_low, ci_high], "kind": DIRECTION}


def stored_certification(model: dict) -> dict | None:
    """The last stored certification record of a registry row, or None if it was never certified."""
    return model.get("metrics", {}).get("certification")


def checklist(details: dict | None) -> pd.DataFrame:
    """The stored checks as a display table: each measured value beside its target."""
    if not details:
        return pd.DataFrame(columns=["check", "measured", "target", "passed", "how"])
    rows = []
    for check in details["checks"]:
        target = check["target"]
        shown = f"{target[0]:+.3f} … {target[1]:+.3f}" if check["comparison"] == "in" else f"{check['comparison']} {_fmt(check['key'], target)}"
        rows.append({"check": check["label"], "measured": _fmt(check["key"], check["value"]), "target": shown,
                     "passed": "✅ pass" if check["passed"] else "❌ fail", "how": check["detail"]})
    return pd.DataFrame(rows)


def _fmt(key: str, value: float) -> str:
    if key == "latency_p95_ms":
        return f"{value:.1f} ms"
    if key == "permutation_p":
        return f"{value:.3f}"
    return f"{value:+.4f}"
