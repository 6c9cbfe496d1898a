"""Statistics of direction (up / down) forecasts: the classifier metrics, the two baselines, calibration error.

Pure functions on arrays (no database, no files): `core.direction` trains and validates, the pages and
the bench read these numbers. Every metric is sklearn's own function, so the definitions are the
standard ones; this module only decides which ones a direction model is judged on, how the baselines
are built from the training fold alone, and how a probability is turned into an interval of belief.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

RELIABILITY_BINS = 10
BELIEF_LEVEL = 0.90  # the interval of belief around a calibrated P(up)
PERSISTENCE_LEAN = 1e-3  # the least "same as today" leans towards today's direction
PROBABILITY_FLOOR = 1e-6  # log loss of a 0 / 1 probability is infinite: clip (sklearn no longer does)


def classification_metrics(y_true: np.ndarray, p_up: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, balanced accuracy, precision, recall, F1, ROC AUC, log loss, Brier and the confusion matrix.

    `p_up` is the predicted probability of an up day; the predicted class is `p_up >= threshold`.
    ROC AUC is NaN when only one class occurs (it is undefined, not 0.5). The confusion matrix is
    [[true down, false up], [false down, true up]] (sklearn's order, rows = actual).
    """
    # lazy: heavy (sklearn costs a page that only lists models about a second on its first visit)
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, brier_score_loss, confusion_matrix, f1_score,
                                 log_loss, precision_score, recall_score, roc_auc_score)

    y = np.asarray(y_true, dtype=int)
    p = np.clip(np.asarray(p_up, dtype=float), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    if len(y) == 0 or len(y) != len(p):
        raise ValueError("classification_metrics needs equally long, non-empty arrays.")
    predicted = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)) if both else float("nan"),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p, pos_label=1)),
        "confusion": confusion_matrix(y, predicted, labels=[0, 1]).tolist(),
        "up_rate": float(np.mean(y)),
        "n": int(len(y)),
    }


def probability_losses(p_up: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log loss, Brier score) of each P(up) against its outcome (1 up, 0 not, NaN unknown): the proper scoring
    rules a direction A/B test compares arms on, and the daily metrics average. P(up) is clipped like
    `classification_metrics` does (a 0 / 1 probability that is wrong has infinite log loss)."""
    p = np.clip(np.asarray(p_up, dtype=float), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    y = np.asarray(up, dtype=float)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)), (p - y) ** 2


def majority_baseline(train_labels: np.ndarray, n: int) -> np.ndarray:
    """"Always up" (or always down, whichever the training fold saw more): P(up) = the fold's up rate, n times.

    Its class is the majority class; its probability is the base rate, the best constant forecast.
    """
    rate = float(np.mean(np.asarray(train_labels, dtype=float)))
    return np.full(n, rate)


def persistence_baseline(train_today_up: np.ndarray, train_labels: np.ndarray, today_up: np.ndarray) -> np.ndarray:
    """"Same as today": P(up tomorrow) = how often, in the training fold, tomorrow repeated today's direction.

    With q = that share, a day that went up gets P(up) = q and a down day 1 - q: the persistence rule
    with an honest (not 0 / 1) probability learnt on training days only. In a fold where tomorrow
    repeated today less than half the time, q is held just above 1/2: the rule stays "same as today"
    (a coin flip leaning its way), it never turns into "opposite of today", which is another model.
    """
    repeated = float(np.mean(np.asarray(train_today_up, dtype=int) == np.asarray(train_labels, dtype=int)))
    repeated = max(repeated, 0.5 + PERSISTENCE_LEAN)
    today_up = np.asarray(today_up, dtype=bool)
    return np.where(today_up, repeated, 1.0 - repeated)


def brier_skill(model_brier: float, baseline_brier: float) -> float:
    """1 - Brier_model / Brier_baseline: 0 is as good as the baseline, positive beats it."""
    return float(1.0 - model_brier / baseline_brier) if baseline_brier > 0 else float("nan")


def versus_baselines(model: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The better baseline (lower Brier), the skill against it and the accuracy edge in points."""
    best = min(baselines, key=lambda name: baselines[name]["brier"])
    return {"best_baseline": best, "skill": brier_skill(model["brier"], baselines[best]["brier"]),
            "accuracy_edge": float(model["accuracy"] - max(b["accuracy"] for b in baselines.values()))}


def paired_gap(model_losses: Any, baseline_losses: Any, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean of model - baseline loss per day, the t-interval of that mean at `level`, days): "beats" the
    baseline is only said when the interval lies below 0. Days with either loss missing are dropped; with fewer
    than 2 days the interval is NaN. Daily outcomes are close to independent, so a plain t-interval fits."""
    from scipy import stats  # lazy: only the live verdict needs it

    gap = np.asarray(model_losses, dtype=float) - np.asarray(baseline_losses, dtype=float)
    gap = gap[np.isfinite(gap)]
    if len(gap) < 2:
        return (float(gap.mean()) if len(gap) else float("nan")), float("nan"), float("nan"), int(len(gap))
    low, high = stats.ttest_1samp(gap, 0.0).confidence_interval(level)
    return float(gap.mean()), float(low), float(high), int(len(gap))


def reliability_table(y_true: np.ndarray, p_up: np.ndarray, n_bins: int = RELIABILITY_BINS) -> pd.DataFrame:
    """Equal-width bins of P(up): mean predicted probability, observed up rate and count per non-empty bin."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(p_up, dtype=float)
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    rows = []
    for b in np.unique(bins):
        inside = bins == b
        rows.append({"bin_low": b / n_bins, "bin_high": (b + 1) / n_bins, "mean_predicted": float(p[inside].mean()),
                     "observed_up": float(y[inside].mean()), "ups": int(y[inside].sum()), "count": int(inside.sum())})
    return pd.DataFrame(rows, columns=["bin_low", "bin_high", "mean_predicted", "observed_up", "ups", "count"])


def expected_calibration_error(y_true: np.ndarray, p_up: np.ndarray, n_bins: int = RELIABILITY_BINS) -> float:
    """ECE: the count-weighted mean |observed up rate - mean predicted probability| over the bins."""
    table = reliability_table(y_true, p_up, n_bins)
    weights = table["count"] / table["count"].sum()
    return float(np.sum(weights * (table["observed_up"] - table["mean_predicted"]).abs()))


def belief_interval(p_up: float, reliability: pd.DataFrame, level: float = BELIEF_LEVEL) -> tuple[float, float]:
    """The interval of belief for a forecast of `p_up`: the Jeffreys interval of the up rate that was
    observed on validation days whose probability fell in the same bin (`reliability_table`).

    Why: a calibrated 0.55 is only worth what the days behind it show; 30 days at 0.55 leave a wide
    interval, 300 a narrow one. A bin without validation days gives the uninformative (0, 1).
    """
    inside = reliability[(reliability["bin_low"] <= p_up) & ((p_up < reliability["bin_high"])
                                                             | (reliability["bin_high"] >= 1.0))]
    if inside.empty:
        return 0.0, 1.0
    ups, count = int(inside["ups"].iloc[0]), int(inside["count"].iloc[0])
    tail = (1 - level) / 2
    from scipy.stats import beta  # lazy: scipy.stats is ~2 s of a page's first visit (issue 16)

    return float(beta.ppf(tail, ups + 0.5, count - ups + 0.5)), float(beta.ppf(1 - tail, ups + 0.5, count - ups + 0.5))


def label_permutation_test(classifier, X: np.ndarray, y: np.ndarray, n_permutations: int = 29, n_splits: int = 2,
                           seed: int = 0) -> dict[str, Any]:
    """Walk-forward accuracy of `classifier` against refits on shuffled labels (sklearn's `permutation_test_score`).

    p = (1 + #null accuracies >= observed) / (1 + n_permutations): small when the features carry information
    about tomorrow's direction that shuffled labels do not. Folds are `TimeSeriesSplit`, never shuffled.
    """
    from sklearn.model_selection import TimeSeriesSplit, permutation_test_score  # lazy: heavy

    observed, null, p_value = permutation_test_score(classifier, X, y, cv=TimeSeriesSplit(n_splits), scoring="accuracy",
                                                     n_permutations=n_permutations, random_state=seed, n_jobs=1)
    return {"observed_accuracy": float(observed), "null_mean": float(np.mean(null)),
            "null_q95": float(np.quantile(null, 0.95)), "p_value": float(p_value), "n_permutations": int(n_permutations)}
