"""Certification statistics: fold skills, the block-bootstrap CI of skill, the shifted-target permutation test (pure, no database).

Skill = 1 - MAE_model / MAE_naive in $. The bootstrap is circular-block (Politis & Romano), blocks of
ceil(n^(1/3)) days, model and naive errors of the same day kept paired. The permutation test refits
the model on circularly shifted targets, which keeps the target's own serial dependence and breaks
only its alignment with the features. `core.certification` runs them on a registered model.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from core.config import get_settings
from core.training import make_estimator

Progress = Callable[[float, str], None]


class CertificationError(ValueError):
    """A model that cannot be put through certification (no validation data, too little history)."""


PERMUTATION_ALPHA = 0.05
N_PERMUTATIONS = 29          # p-values on a grid of 1/30: the smallest, 0.033, is below alpha
PERMUTATION_SPLITS = 2       # walk-forward folds of each refit (the registered validation uses 5)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_CONFIDENCE = 0.95
# The permutation test refits the model 2 x (1 + N_PERMUTATIONS) times: forests are refitted with 50
# trees instead of 200 (a forest's mean prediction is stable well before 200 trees), XGBoost with 100
# rounds at 3x the learning rate (the same total shrinkage). Observed and null scores use the same
# light model, so the comparison stays like for like.
REFIT_OVERRIDES: dict[str, dict[str, Any]] = {
    "rf": {"n_estimators": 50},
    "xgb": {"n_estimators": 100, "learning_rate": 0.09},
    "naive": {},
}


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
    from sklearn.model_selection import TimeSeriesSplit  # lazy: heavy

    params = {**(params or {}), **REFIT_OVERRIDES.get(model_type, {})}
    splits = list(TimeSeriesSplit(n_splits=n_splits).split(X))
    rng = np.random.default_rng(seed)
    shifts = rng.choice(np.arange(margin, n - margin), size=n_permutations, replace=False)
    targets = [y] + [np.roll(y, int(s)) for s in shifts]
    jobs = (delayed(_walk_forward_skill)(X, t, close, model_type, params, splits) for t in targets)
    scores = []
    n_jobs = get_settings().train_threads if n_jobs is None else n_jobs  # the demo's workers use 1 each
    for done, score in enumerate(Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(jobs), start=1):
        scores.append(score)
        if progress:
            progress(done / len(targets), f"Permutation test: refit {done} of {len(targets)}")
    observed, null = scores[0], np.asarray(scores[1:])
    p_value = float((1 + np.sum(null >= observed)) / (1 + len(null)))
    return PermutationTest(observed_skill=observed, null_skills=null, p_value=p_value)


# --- check 5: serving latency -------------------------------------------------------------------------
