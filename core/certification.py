"""Certification: the five robustness checks a model must pass to be deployed without an override.

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

Checks 1, 2 and 4 read the out-of-sample predictions saved at registration (no refit); check 3
refits the model (with fewer trees, see `REFIT_OVERRIDES`); check 5 times real predictions. The result
is stored with the model through `core.registry.set_certification`. Certification depends on the model
only (its training window and artifact), never on the clock, so no `as_of` is needed.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils
from joblib import Parallel, delayed
from sklearn.model_selection import TimeSeriesSplit

from core.config import get_settings
from core.features import FEATURE_COLUMNS, TARGET, build_features, check_feature_frame, training_rows
from core.market import load_prices
from core.predict import feature_row, forecast
from core.registry import get_model, load_model, set_certification, validation_predictions
from core.store import get_db, utc_now
from core.training import make_estimator

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

PERMUTATION_ALPHA = 0.05
N_PERMUTATIONS = 29          # p-values on a grid of 1/30: the smallest, 0.033, is below alpha
PERMUTATION_SPLITS = 2       # walk-forward folds of each refit (the registered validation uses 5)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_CONFIDENCE = 0.95
LATENCY_CALLS = 40
# The permutation test refits the model 2 x (1 + N_PERMUTATIONS) times: forests are refitted with 50
# trees instead of 200 (a forest's mean prediction is stable well before 200 trees), XGBoost with 100
# rounds at 3x the learning rate (the same total shrinkage). Observed and null scores use the same
# light model, so the comparison stays like for like.
REFIT_OVERRIDES: dict[str, dict[str, Any]] = {
    "rf": {"n_estimators": 50},
    "xgb": {"n_estimators": 100, "learning_rate": 0.09},
    "naive": {},
}


class CertificationError(ValueError):
    """A model that cannot be put through certification (no validation data, too little history)."""


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

def dollar_skill(close: np.ndarray, predicted_return: np.ndarray, actual_return: np.ndarray) -> float:
    """Skill in $ terms, from log returns: 1 - sum|close*(e^pred - e^act)| / sum|close*(1 - e^act)|."""
    actual = np.exp(actual_return)
    model_error = np.abs(close * (np.exp(predicted_return) - actual)).sum()
    naive_error = np.abs(close * (1.0 - actual)).sum()
    return float(1.0 - model_error / naive_error) if naive_error > 0 else float("nan")


def fold_skills(validation: pd.DataFrame) -> np.ndarray:
    """Skill of each walk-forward fold, from a validation frame (fold, last/actual/predicted_close)."""
    missing = {"fold", "last_close", "actual_close", "predicted_close"} - set(validation.columns)
    if missing:
        raise CertificationError(f"validation predictions lack the column(s) {', '.join(sorted(missing))}.")
    errors = pd.DataFrame({
        "fold": validation["fold"].to_numpy(),
        "model": (validation["predicted_close"] - validation["actual_close"]).abs().to_numpy(),
        "naive": (validation["last_close"] - validation["actual_close"]).abs().to_numpy(),
    }).groupby("fold").sum()
    return (1.0 - errors["model"] / errors["naive"]).to_numpy()


# --- check 4: circular block bootstrap ----------------------------------------------------------------

def default_block_length(n: int) -> int:
    """n^(1/3), the order Hall, Horowitz & Jing (1995) show is optimal for block-bootstrap variance."""
    return max(2, math.ceil(n ** (1 / 3)))


def block_bootstrap_skill_ci(
    model_abs_error: np.ndarray,
    naive_abs_error: np.ndarray,
    confidence: float = BOOTSTRAP_CONFIDENCE,
    block_length: int | None = None,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of skill = 1 - mean(model error) / mean(naive error) by circular block bootstrap.

    Daily errors are serially dependent (volatility clusters), so days are resampled in blocks of
    consecutive days (Politis & Romano 1992, wrapping around the end) and model and naive errors of
    the same day stay paired. An i.i.d. bootstrap would give intervals that are too narrow.

    >>> lo, hi = block_bootstrap_skill_ci(np.full(100, 0.5), np.ones(100))
    >>> round(lo, 6), round(hi, 6)
    (0.5, 0.5)
    """
    model = np.asarray(model_abs_error, dtype=float)
    naive = np.asarray(naive_abs_error, dtype=float)
    if model.shape != naive.shape or model.ndim != 1 or len(model) < 10:
        raise CertificationError(f"the bootstrap needs two equally long series of at least 10 errors, got {model.shape} and {naive.shape}.")
    n = len(model)
    block = block_length or default_block_length(n)
    n_blocks = math.ceil(n / block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(n_resamples, n_blocks, 1))
    index = ((starts + np.arange(block)) % n).reshape(n_resamples, -1)[:, :n]
    skills = 1.0 - model[index].sum(axis=1) / naive[index].sum(axis=1)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(skills, [tail, 1.0 - tail])
    return float(low), float(high)


# --- check 3: permutation test with circular shifts ---------------------------------------------------

@dataclass(frozen=True)
class PermutationTest:
    observed_skill: float
    null_skills: np.ndarray
    p_value: float

    def summary(self) -> dict[str, float]:
        return {"observed_skill": self.observed_skill, "null_mean": float(np.mean(self.null_skills)),
                "null_q95": float(np.quantile(self.null_skills, 0.95)), "p_value": self.p_value,
                "n_permutations": int(len(self.null_skills))}


def _walk_forward_skill(X: np.ndarray, target: np.ndarray, close: np.ndarray, model_type: str,
                        params: dict[str, Any], splits: list[tuple[np.ndarray, np.ndarray]]) -> float:
    predicted, actual, closes = [], [], []
    for train_index, test_index in splits:
        model = make_estimator(model_type, params, n_jobs=1).fit(X[train_index], target[train_index])
        predicted.append(model.predict(X[test_index]))
        actual.append(target[test_index])
        closes.append(close[test_index])
    return dollar_skill(np.concatenate(closes), np.concatenate(predicted), np.concatenate(actual))


def permutation_skill_test(
    X: np.ndarray,
    y: np.ndarray,
    close: np.ndarray,
    model_type: str,
    params: dict[str, Any] | None = None,
    n_permutations: int = N_PERMUTATIONS,
    n_splits: int = PERMUTATION_SPLITS,
    seed: int = 0,
    progress: Progress | None = None,
    n_jobs: int | None = None,
) -> PermutationTest:
    """Does the model beat itself refitted on targets that no longer line up with the features?

    sklearn's `permutation_test_score` shuffles targets day by day, which destroys their serial
    dependence (volatility clustering) and so makes the null too easy to beat. Here each null target
    series is the real one circularly shifted by a random lag of at least 10% of the sample: every
    series keeps its own autocorrelation, only the alignment of features and target is broken. The
    statistic is the walk-forward (`TimeSeriesSplit`) $ skill; p = (1 + #{null >= observed}) /
    (1 + n_permutations), the exact permutation p-value (Phipson & Smyth 2010).

    The naive model ignores its inputs, so its null equals its observed skill and p = 1: it has no
    signal to certify.
    """
    X, y, close = np.asarray(X, dtype=float), np.asarray(y, dtype=float), np.asarray(close, dtype=float)
    n = len(y)
    margin = max(1, n // 10)
    if n < 50 or n - 2 * margin < n_permutations:
        raise CertificationError(f"the permutation test needs at least 50 rows and room for {n_permutations} shifts, got {n}.")
    params = {**(params or {}), **REFIT_OVERRIDES.get(model_type, {})}
    splits = list(TimeSeriesSplit(n_splits=n_splits).split(X))
    rng = np.random.default_rng(seed)
    shifts = rng.choice(np.arange(margin, n - margin), size=n_permutations, replace=False)
    targets = [y] + [np.roll(y, int(s)) for s in shifts]
    jobs = (delayed(_walk_forward_skill)(X, t, close, model_type, params, splits) for t in targets)
    scores = []
    n_jobs = get_settings().train_threads if n_jobs is None else n_jobs
    for done, score in enumerate(Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(jobs), start=1):
        scores.append(score)
        if progress:
            progress(done / len(targets), f"Permutation test: refit {done} of {len(targets)}")
    observed, null = scores[0], np.asarray(scores[1:])
    p_value = float((1 + np.sum(null >= observed)) / (1 + len(null)))
    return PermutationTest(observed_skill=observed, null_skills=null, p_value=p_value)


# --- check 5: serving latency -------------------------------------------------------------------------

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
    from core.features import WARMUP_DAYS

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
    settings = get_settings()
    started = time.perf_counter()
    report = progress or (lambda _fraction, _message: None)
    model = get_model(model_id, db=db)

    report(0.02, "Reading the walk-forward validation")
    validation = validation_predictions(model_id)
    skills = fold_skills(validation)
    mean_skill, std_skill = float(np.mean(skills)), float(np.std(skills, ddof=1)) if len(skills) > 1 else float("nan")

    report(0.05, "Block bootstrap of the validation skill")
    model_error = (validation["predicted_close"] - validation["actual_close"]).abs().to_numpy()
    naive_error = (validation["last_close"] - validation["actual_close"]).abs().to_numpy()
    ci_low, ci_high = block_bootstrap_skill_ci(model_error, naive_error)

    report(0.08, "Rebuilding the training window")
    rows = training_window(model, db=db)
    permutation = permutation_skill_test(
        check_feature_frame(rows, model["features"] or FEATURE_COLUMNS), rows[TARGET].to_numpy(),
        rows["close"].to_numpy(), model["model_type"], model["params"],
        progress=lambda f, m: report(0.1 + 0.8 * f, m),
    )

    report(0.92, "Timing the serving path")
    latency = serving_latency_ms(model_id, db=db)
    p95 = float(np.percentile(latency, 95))

    checks = [
        _check("cv_mean_skill", "CV mean skill vs naive", mean_skill, "in",
               [settings.cert_min_skill, settings.cert_max_skill],
               f"{len(skills)} walk-forward folds: " + ", ".join(f"{s:+.3f}" for s in skills)),
        _check("cv_skill_std", "CV skill std (stability)", std_skill, "<=", settings.cert_max_skill_std,
               "standard deviation of the fold skills (ddof=1)"),
        _check("permutation_p", "Permutation test p-value", permutation.p_value, "<", PERMUTATION_ALPHA,
               f"skill {permutation.observed_skill:+.4f} vs shifted-target refits (mean "
               f"{np.mean(permutation.null_skills):+.4f}, 95th pct {np.quantile(permutation.null_skills, 0.95):+.4f})"),
        _check("bootstrap_ci_lower", "Skill 95% CI lower bound", ci_low, ">=", settings.cert_min_ci_lower,
               f"circular block bootstrap, block {default_block_length(len(validation))} days: "
               f"[{ci_low:+.4f}, {ci_high:+.4f}] over {len(validation)} days"),
        _check("latency_p95_ms", "Serving latency P95 (ms)", p95, "<=", settings.cert_max_latency_p95_ms,
               f"{len(latency)} calls of the serving path, median {np.median(latency):.1f} ms"),
    ]
    result = Certification(
        model_id=model_id, certified=all(c.passed for c in checks), checks=checks,
        seconds=round(time.perf_counter() - started, 2), computed_at=utc_now(),
        extras={"permutation": permutation.summary(), "bootstrap_ci": [ci_low, ci_high],
                "refit_overrides": REFIT_OVERRIDES.get(model["model_type"], {})},
    )
    if store:
        set_certification(model_id, result.certified, result.to_details(), db=db)
        _refresh_model_card(model_id)
    report(1.0, "Certified" if result.certified else "Not certified")
    log.info("certification of %s: %s in %.1f s (%s)", model_id, result.certified, result.seconds,
             ", ".join(f"{c.key}={'pass' if c.passed else 'FAIL'}" for c in checks))
    return result


def _refresh_model_card(model_id: str) -> None:
    """The model card shows the certification: rewrite it (milliseconds; importance files are reused)."""
    from core.explain import write_model_artifacts  # shap is heavy: import only when a card is written

    try:
        write_model_artifacts(model_id)
    except Exception as exc:  # the certification is stored; a stale card must not undo it
        log.warning("could not rewrite the model card of %s after certification: %s", model_id, exc)


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
