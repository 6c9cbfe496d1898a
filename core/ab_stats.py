"""A/B statistics: routing hash, sequential (always-valid) and fixed-horizon comparisons of arms, SRM (pure, no database).

Decision rule: the page is looked at every day, so a fixed-horizon t-test re-run daily would find
false winners far more often than its nominal 5 %. The winner is therefore decided by an always-valid
p-value from a mixture sequential probability ratio test (mSPRT; Johari, Pekelis & Walsh, "Always
Valid Inference", 2017; Robbins 1970), which may be checked after every observation. Welch's /
the paired t-test are reported beside it as the fixed-horizon reference.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SRM_ALPHA = 0.001  # sample-ratio-mismatch flag: p below this means the split is broken, not unlucky
MIXTURE_EFFECT_SD = 0.5  # mSPRT prior: standardised effect ~ N(0, 0.5^2), a "medium" effect (Cohen 1988)
DECISION_RULE = "always-valid mSPRT p-value (peeking-safe, checked after every daily look)"


class ExperimentError(ValueError):
    """An experiment that cannot be created, routed, analysed or stopped as asked."""


def route_key(experiment_id: int, request_key: str, shares: Sequence[float]) -> int:
    """The arm index for a request: sha256 of (experiment id, key) mapped into [0, 1) against the
    cumulative shares. Deterministic across processes and restarts (Python's `hash()` is salted).

    >>> route_key(1, "AAPL:2012-05-01", [0.5, 0.5]) == route_key(1, "AAPL:2012-05-01", [0.5, 0.5])
    True
    """
    digest = hashlib.sha256(f"{experiment_id}:{request_key}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64
    edges = list(itertools.accumulate(shares))
    return min(bisect.bisect_right(edges, position), len(shares) - 1)



@dataclass(frozen=True)
class Looks:
    """Cumulative statistics at each look (last axis) of a comparison, any leading shape.

    `difference` is challenger minus control mean loss (negative: the challenger errs less),
    `variance` its estimated variance, `scale2` the per-observation variance that sets the mSPRT
    prior's width, `df` the t degrees of freedom.
    """

    n_control: np.ndarray
    n_challenger: np.ndarray
    difference: np.ndarray
    variance: np.ndarray
    scale2: np.ndarray
    df: np.ndarray


def _moments(n, total, total_sq):
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n
        var = (total_sq - n * mean**2) / (n - 1)
    return mean, np.maximum(var, 0.0)


def looks_two_sample(n_a, sum_a, sumsq_a, n_b, sum_b, sumsq_b) -> Looks:
    """Welch statistics from cumulative count, sum and sum of squares of each arm's losses."""
    n_a, n_b = np.asarray(n_a, dtype=float), np.asarray(n_b, dtype=float)
    mean_a, var_a = _moments(n_a, np.asarray(sum_a, dtype=float), np.asarray(sumsq_a, dtype=float))
    mean_b, var_b = _moments(n_b, np.asarray(sum_b, dtype=float), np.asarray(sumsq_b, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        se_a, se_b = var_a / n_a, var_b / n_b
        variance = se_a + se_b
        df = variance**2 / (se_a**2 / (n_a - 1) + se_b**2 / (n_b - 1))  # Welch-Satterthwaite
    return Looks(n_a, n_b, mean_b - mean_a, variance, (var_a + var_b) / 2, df)


def looks_paired(n, sum_d, sumsq_d) -> Looks:
    """Paired statistics from cumulative count, sum and sum of squares of differences (challenger - control)."""
    n = np.asarray(n, dtype=float)
    mean, var = _moments(n, np.asarray(sum_d, dtype=float), np.asarray(sumsq_d, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        return Looks(n, n, mean, var / n, var, n - 1)


def always_valid_pvalues(looks: Looks, min_samples: int, effect_sd: float = MIXTURE_EFFECT_SD) -> np.ndarray:
    """mSPRT always-valid p-values along the last axis (running minimum over looks).

    With a normal mixture N(0, tau^2) over the true difference, tau^2 = effect_sd^2 * scale2, the
    likelihood ratio at a look with difference d and variance V is
    sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2))); by Ville's inequality its
    reciprocal's running minimum is a p-value valid however often it is checked. Looks before both
    arms have `min_samples` observations are skipped (the plug-in variance is unreliable there).

    Paired differences with mean -0.5 and sd 1 after 30 and 60 observations: the fixed t-test p is
    0.012 at the first look already; the always-valid p asks for more evidence before it gets small.

    >>> lk = looks_paired(np.array([30, 60]), np.array([-15.0, -30.0]), np.array([37.5, 75.0]))
    >>> np.round(always_valid_pvalues(lk, min_samples=30), 4).tolist()
    [0.119, 0.004]
    """
    tau2 = effect_sd**2 * looks.scale2
    eligible = (np.minimum(looks.n_control, looks.n_challenger) >= max(min_samples, 2)) & (looks.variance > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = looks.variance
        log_lr = 0.5 * np.log(v / (v + tau2)) + looks.difference**2 * tau2 / (2 * v * (v + tau2))
        p = np.minimum(1.0, np.exp(-log_lr))
    p = np.where(eligible & np.isfinite(p), p, 1.0)
    return np.minimum.accumulate(p, axis=-1)


def confidence_sequence(looks: Looks, alpha: float, min_samples: int, effect_sd: float = MIXTURE_EFFECT_SD):
    """(low, high) always-valid bounds on the difference, intersected over looks (the mSPRT's dual)."""
    tau2 = effect_sd**2 * looks.scale2
    v = looks.variance
    eligible = (np.minimum(looks.n_control, looks.n_challenger) >= max(min_samples, 2)) & (v > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.sqrt(v * (v + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((v + tau2) / v)))
    low = np.where(eligible, looks.difference - half, -np.inf)
    high = np.where(eligible, looks.difference + half, np.inf)
    return np.maximum.accumulate(low, axis=-1), np.minimum.accumulate(high, axis=-1)


def fixed_horizon_pvalues(looks: Looks) -> np.ndarray:
    """Two-sided t-test p-value at each look (Welch or paired): valid only if looked at once."""
    from scipy import stats  # lazy: scipy.stats is ~2 s of a page's first visit (issue 16)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = looks.difference / np.sqrt(looks.variance)
        p = 2 * stats.t.sf(np.abs(t), looks.df)
    return np.where(np.isfinite(p), p, 1.0)


def cumulative_by_look(losses: np.ndarray, look: np.ndarray, n_looks: int):
    """(count, sum, sum of squares) of `losses` up to and including each look 0..n_looks-1."""
    losses = np.asarray(losses, dtype=float)
    look = np.asarray(look, dtype=int)
    return tuple(np.cumsum(np.bincount(look, weights=w, minlength=n_looks)[:n_looks])
                 for w in (np.ones_like(losses), losses, losses**2))


@dataclass(frozen=True)
class Comparison:
    """One challenger arm against the control arm A on the primary metric's per-prediction loss."""

    arm: str
    control: str
    test: str  # "welch" (independent arms) or "paired" (shadow mode, same requests)
    n: int
    n_control: int
    difference: float  # challenger mean loss - control mean loss
    ci_low: float  # fixed-horizon confidence interval of the difference
    ci_high: float
    p_fixed: float  # Welch's / paired t-test p-value
    p_sequential: float  # always-valid mSPRT p-value
    cs_low: float  # always-valid confidence sequence of the difference
    cs_high: float
    significant: bool  # by the rule in force, after min_samples


@dataclass(frozen=True)
class ArmComparison:
    arms: tuple[str, ...]
    n: dict[str, int]
    mean_loss: dict[str, float]
    comparisons: list[Comparison]
    alpha: float
    alpha_per_comparison: float  # Bonferroni over the challenger-vs-control comparisons
    rule: str
    enough_samples: bool
    srm_p: float | None
    srm_flag: bool
    winner: str | None
    significant: bool
    improvement_pct: float  # lower loss of the best arm vs the control (or vs the best challenger if A is best)
    track: pd.DataFrame = field(repr=False)  # per look: comparison, look, n, p_sequential, p_fixed


def compare_arms(
    errors_by_arm: Mapping[str, Sequence[float]],
    shares: Sequence[float],
    confidence_level: float,
    min_samples: int,
    paired: bool = False,
    served_counts: Mapping[str, int] | None = None,
    looks: Mapping[str, Sequence[int]] | None = None,
    rule: str = "sequential",
) -> ArmComparison:
    """Compare arms on arrays of per-prediction losses (e.g. absolute errors), in time order.

    The first arm is the control. `paired` means the arrays are aligned (same requests, shadow
    mode). `looks` gives each observation's look (day) number, non-decreasing; by default each
    position is a look. `served_counts` are the routed request counts for the sample-ratio check
    (default: the array lengths, unless paired). `rule` "sequential" (default, peeking-safe) or
    "fixed" (the t-test; valid only when looked at once, kept to show what peeking does).
    """
    if rule not in ("sequential", "fixed"):
        raise ExperimentError(f"rule must be 'sequential' or 'fixed', got {rule!r}.")
    arms = tuple(errors_by_arm)
    if len(arms) < 2 or len(shares) != len(arms):
        raise ExperimentError("compare_arms needs at least two arms and one share per arm.")
    losses = {arm: np.asarray(errors_by_arm[arm], dtype=float) for arm in arms}
    if any(not np.isfinite(v).all() for v in losses.values()):
        raise ExperimentError("Losses contain NaN or infinite values: drop predictions without actuals first.")
    if paired and len({len(v) for v in losses.values()}) != 1:
        raise ExperimentError("Paired comparison needs equally long arrays (the same requests in every arm).")
    look_of = {arm: np.asarray(looks[arm], dtype=int) if looks is not None else np.arange(len(losses[arm]))
               for arm in arms}
    alpha = 1 - confidence_level
    alpha_each = alpha / (len(arms) - 1)
    n = {arm: int(len(v)) for arm, v in losses.items()}
    mean_loss = {arm: float(v.mean()) if len(v) else float("nan") for arm, v in losses.items()}
    enough = min(n.values()) >= min_samples
    control = arms[0]
    comparisons, tracks = [], []
    for arm in arms[1:]:
        comparison, track = _compare_pair(losses[control], losses[arm], look_of[control], look_of[arm], control, arm,
                                          paired, alpha_each, min_samples, enough, rule)
        comparisons.append(comparison)
        tracks.append(track)
    counts = served_counts if served_counts is not None else (None if paired else n)
    srm_p = srm_pvalue([counts[a] for a in arms], shares) if counts is not None else None
    winner, improvement = _decide(comparisons, mean_loss, control)
    return ArmComparison(
        arms=arms, n=n, mean_loss=mean_loss, comparisons=comparisons, alpha=alpha, alpha_per_comparison=alpha_each,
        rule=rule, enough_samples=enough, srm_p=srm_p, srm_flag=srm_p is not None and srm_p < SRM_ALPHA,
        winner=winner, significant=winner is not None, improvement_pct=improvement,
        track=pd.concat(tracks, ignore_index=True) if tracks else pd.DataFrame(),
    )


def _compare_pair(loss_a, loss_b, look_a, look_b, control, arm, paired, alpha_each, min_samples, enough, rule):
    from scipy import stats  # lazy: scipy.stats is ~2 s of a page's first visit (issue 16)
    n_looks = int(max(look_a.max(initial=-1), look_b.max(initial=-1))) + 1
    if paired:
        looks = looks_paired(*cumulative_by_look(loss_b - loss_a, look_a, n_looks))
    else:
        looks = looks_two_sample(*cumulative_by_look(loss_a, look_a, n_looks), *cumulative_by_look(loss_b, look_b, n_looks))
    p_seq = always_valid_pvalues(looks, min_samples)
    p_fix = fixed_horizon_pvalues(looks)
    cs_low, cs_high = confidence_sequence(looks, alpha_each, min_samples)
    ci_low = ci_high = p_fixed = float("nan")
    if min(len(loss_a), len(loss_b)) >= 2:
        result = (stats.ttest_rel(loss_b, loss_a) if paired else stats.ttest_ind(loss_b, loss_a, equal_var=False))
        p_fixed = float(result.pvalue)
        ci = result.confidence_interval(1 - alpha_each)
        ci_low, ci_high = float(ci.low), float(ci.high)
    p_last = float(p_seq[-1]) if n_looks else 1.0
    decisive = p_last if rule == "sequential" else p_fixed
    comparison = Comparison(
        arm=arm, control=control, test="paired" if paired else "welch", n=len(loss_b), n_control=len(loss_a),
        difference=float(loss_b.mean() - loss_a.mean()) if len(loss_a) and len(loss_b) else float("nan"),
        ci_low=ci_low, ci_high=ci_high, p_fixed=p_fixed, p_sequential=p_last,
        cs_low=float(cs_low[-1]) if n_looks else float("-inf"), cs_high=float(cs_high[-1]) if n_looks else float("inf"),
        significant=bool(enough and np.isfinite(decisive) and decisive <= alpha_each),
    )
    track = pd.DataFrame({"comparison": f"{arm} vs {control}", "look": np.arange(n_looks),
                          "n_control": looks.n_control, "n": looks.n_challenger,
                          "p_sequential": p_seq, "p_fixed": p_fix})
    return comparison, track


def _decide(comparisons: list[Comparison], mean_loss: dict[str, float], control: str) -> tuple[str | None, float]:
    """Winner: the lowest-loss challenger significantly better than A; else A if it beats every challenger."""
    better = [c for c in comparisons if c.significant and c.difference < 0]
    if better:
        best = min(better, key=lambda c: mean_loss[c.arm])
        return best.arm, _pct(mean_loss[control], mean_loss[best.arm])
    challengers = [c.arm for c in comparisons]
    best_challenger = min(challengers, key=lambda a: mean_loss[a])
    if comparisons and all(c.significant and c.difference > 0 for c in comparisons):
        return control, _pct(mean_loss[best_challenger], mean_loss[control])
    if mean_loss[best_challenger] < mean_loss[control]:
        return None, _pct(mean_loss[control], mean_loss[best_challenger])
    return None, _pct(mean_loss[best_challenger], mean_loss[control])


def _pct(reference: float, better: float) -> float:
    return float((reference - better) / reference * 100) if reference and np.isfinite(reference) else float("nan")


def srm_pvalue(counts: Sequence[int], shares: Sequence[float]) -> float | None:
    """Sample-ratio mismatch: chi-square p-value of observed routed counts against the shares.

    >>> round(srm_pvalue([4500, 5500], [0.5, 0.5]), 12) < 0.001
    True
    """
    from scipy import stats  # lazy: scipy.stats is ~2 s of a page's first visit (issue 16)
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    if total == 0:
        return None
    return float(stats.chisquare(counts, f_exp=np.asarray(shares, dtype=float) * total).pvalue)


# --- analysis of a stored experiment ------------------------------------------------------------------
