"""Calibration of sequential detectors to a model's reference window: standardisation and thresholds.

Pure statistics (numpy, scipy, pandas; no database). `Standardiser` turns raw daily values into innovations
with mean 0 and sd 1 on the reference. `calibrate` is the entry point for thresholds: given each detector's
standardised reference innovations it returns the thresholds h for which the model's detectors,
taken together, raise about one false alarm every `arl_days` trading days (the in-control average
run length, ARL). `siegmund_arl` is the analytic cross-check for i.i.d. normal innovations.

Method, in four steps:

1. **Resample.** Each reference series x is written as an AR(p) filter (Yule-Walker, p <= 5 by AIC)
   driven by residuals (the AR sieve, Buehlmann 1997: linear autocorrelation is reproduced exactly);
   the residuals are resampled with the stationary bootstrap (Politis & Romano 1994: blocks of
   geometric length, mean ceil(n^(1/3)) = 10 days for a 1000-day reference, as in
   `core/certification.py`), which keeps fat tails and short volatility clusters, and filtered back.
   Blocks start only on `calm` days when given (`calm_days`: the reference's
   stretches of ordinary volatility): a lasting volatility regime is a change the detectors are
   meant to report, not part of their false-alarm budget. Detectors of one *group* (all of a
   model's, in `core.sequential.fit_profile`) see the same resampled days, so their correlation
   counts in the joint ARL; separate groups are resampled independently (conservative).
2. **Simulate.** On `n_paths` paths of `horizon` days every CUSUM runs from zero, all paths at once:
   with X_t = sum_{s<=t} (x_s - k), Page's recursion S_t = max(0, S_{t-1} + x_t - k) equals
   X_t - min(0, min_{s<=t} X_s), two numpy accumulations. A component (one drift k of one detector,
   both sides, all streams) alarms at the first t where its running maximum reaches h.
3. **Estimate the ARL.** Run lengths beyond the horizon are censored; after a short warm-up a
   CUSUM's run length is close to exponential, so ARL ~ (days observed before an alarm or the end)
   / (number of alarms), the censored-exponential maximum-likelihood estimate.
4. **Share the budget.** Every component gets the same ARL A (one h per component, by bisection
   on the sorted running maxima); A is raised until the first alarm of *any* component comes on
   average every `arl_days` days. So "one false alarm per model per year" covers all its detectors.

Precision: a 1000-day reference is a finite sample; on i.i.d. normal noise the ARL its thresholds
deliver ranges over about 0.6x to 1.6x of the target from one reference to the next (on target on
average; tests/test_sequential.py). Cost: about 0.1-0.4 s per model for four detectors (400 paths x
500 days), once at registration.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.config import get_settings

CALM_WINDOW = 30  # trading days of the rolling volatility that marks the reference's calm stretches


@dataclass(frozen=True)
class Standardiser:
    """u = (T(clip((raw - centre) / scale, -clip, clip)) - mean) / sd, every parameter from the reference.

    transform T: "level" (identity) or "log_square" (log(1 + z^2)); centre / scale: median and
    1.4826 x MAD; mean / sd: of the transformed reference, so u has mean 0 and sd 1 there. Fields
    may be arrays (one per feature, or stacked over models): the call broadcasts.
    >>> s = Standardiser.fit(np.array([-2.0, -1.0, 0.0, 1.0, 2.0]))
    >>> [round(float(v), 3) for v in s(np.array([0.0, 3.0]))]
    [0.0, 2.121]
    """

    transform: str
    centre: Any
    scale: Any
    clip: Any
    mean: Any
    sd: Any

    @classmethod
    def fit(cls, reference: np.ndarray, transform: str = "level", clip: float = np.inf) -> "Standardiser":
        ref = np.asarray(reference, dtype=float)
        centre = np.nanmedian(ref, axis=0)
        scale = 1.4826 * np.nanmedian(np.abs(ref - centre), axis=0)
        scale = np.where(scale > 0, scale, np.nanstd(ref, axis=0))
        scale = np.where(scale > 0, scale, 1.0)
        raw = cls(transform, centre, scale, clip, 0.0, 1.0)._transformed(ref)
        sd = np.nanstd(raw, axis=0)
        return cls(transform, centre, scale, clip, np.nanmean(raw, axis=0), np.where(sd > 0, sd, 1.0))

    def _transformed(self, raw: np.ndarray) -> np.ndarray:
        z = np.clip((np.asarray(raw, dtype=float) - self.centre) / self.scale, -np.asarray(self.clip, dtype=float),
                    self.clip)
        return np.log1p(z * z) if self.transform == "log_square" else z

    def __call__(self, raw: Any) -> np.ndarray:
        return (self._transformed(raw) - self.mean) / self.sd

    def to_dict(self) -> dict:
        """JSON-safe: arrays become lists, an infinite clip becomes None."""
        def plain(v):
            v = np.asarray(v, dtype=float)
            return [plain(x) for x in v] if v.ndim else (None if np.isinf(v) else float(v))
        return {"transform": self.transform} | {k: plain(getattr(self, k)) for k in
                                                ("centre", "scale", "clip", "mean", "sd")}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Standardiser":
        def value(v):
            if isinstance(v, list):
                return np.array([np.inf if x is None else x for x in v], dtype=float)
            return np.inf if v is None else float(v)
        return cls(data["transform"], *(value(data[k]) for k in ("centre", "scale", "clip", "mean", "sd")))

    @classmethod
    def stack(cls, items: Sequence["Standardiser"]) -> "Standardiser":
        """One standardiser for N models (fields stacked on a first axis of length N)."""
        fields = [np.array([np.broadcast_to(np.asarray(getattr(s, k), dtype=float), np.shape(s.centre))
                            for s in items]) for k in ("centre", "scale", "clip", "mean", "sd")]
        return cls(items[0].transform, *fields)

    @classmethod
    def stack_stored(cls, stored: Sequence[Mapping]) -> "Standardiser":
        """`stack` of N `from_dict`s straight from the dicts (None: infinite): the same arrays (tested), a tenth
        of the time for 1,000 models."""
        def field_of(key: str) -> np.ndarray:
            raw = np.array([s[key] for s in stored], dtype=object)
            return np.where(np.equal(raw, None), np.inf, raw).astype(float)

        fields = [field_of(key) for key in ("centre", "scale", "clip", "mean", "sd")]
        shape = fields[0].shape
        return cls(stored[0]["transform"], *(np.broadcast_to(v.reshape(v.shape + (1,) * (len(shape) - v.ndim)),
                                                              shape).copy() for v in fields))


@dataclass(frozen=True)
class Stream:
    """One detector's reference innovations, as the calibration needs them.

    values: (n,) or (n, F) standardised reference innovations (F streams share one threshold; NaN:
    no observation that day); drifts: the CUSUM bank's reference values k, in standard deviations;
    two_sided: watch both directions; group: detectors of one group are resampled on the same days
    (their values must be aligned day by day), which keeps their correlation in the joint ARL.
    """

    values: np.ndarray
    drifts: tuple[float, ...]
    two_sided: bool = True
    group: str = ""


@dataclass(frozen=True)
class Calibration:
    """thresholds: detector -> one h per drift; target: the ARL asked for; component_arl: the ARL each
    component was given; arl: the estimated ARL of the model's first alarm (any detector);
    block_length: group -> mean bootstrap block length L."""

    thresholds: dict[str, tuple[float, ...]]
    target: float
    component_arl: float
    arl: float
    block_length: dict[str, float] = field(default_factory=dict)


def block_length(x: np.ndarray) -> float:
    """Politis & White (2004; Patton, Politis & White 2009) mean block length for the stationary bootstrap.

    Flat-top lag window on the sample autocovariances; at least n^(1/3), at most n / 10.
    >>> round(block_length(np.random.default_rng(0).normal(size=1000)), 1)
    10.0
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)] - np.nanmean(x)
    n = len(x)
    floor, cap = float(np.ceil(n ** (1 / 3))), max(n / 10.0, 1.0)
    if n < 20 or not np.any(x):
        return min(floor, cap)
    max_lag = int(min(np.ceil(np.sqrt(n)) + 10, n // 2))
    acov = np.array([x[: n - k] @ x[k:] / n for k in range(max_lag + 1)])
    rho = acov[1:] / acov[0]
    k_n, bound = max(5, int(np.sqrt(np.log10(n)))), 2.0 * np.sqrt(np.log10(n) / n)
    small = np.abs(rho) < bound
    run = np.convolve(small.astype(int), np.ones(k_n, dtype=int), mode="valid") == k_n
    m_hat = int(np.argmax(run)) if run.any() else max_lag  # lags m+1..m+K_N all negligible
    m = min(2 * m_hat, max_lag)
    lags = np.arange(-m, m + 1)
    weight = np.clip(2.0 - 2.0 * np.abs(lags / m), 0.0, 1.0) if m > 0 else np.ones(1)
    gamma = acov[np.abs(lags)]
    g_hat, big_g = np.sum(weight * gamma), np.sum(weight * np.abs(lags) * gamma)
    if g_hat <= 0:
        return min(floor, cap)
    length = (2.0 * big_g**2 / (2.0 * g_hat**2)) ** (1 / 3) * n ** (1 / 3)
    return float(np.clip(length, floor, cap))


def ar_sieve(x: np.ndarray, max_order: int = 5) -> tuple[float, np.ndarray, np.ndarray]:
    """AR(p) fit by Yule-Walker, p <= max_order chosen by AIC: (mean, coefficients, residuals).

    Residuals are NaN where x is NaN or an earlier lag is (no observation that day).
    >>> rng = np.random.default_rng(0); e = rng.normal(size=5000); x = e.copy()
    >>> for t in range(1, 5000): x[t] = 0.5 * x[t - 1] + e[t]
    >>> np.round(ar_sieve(x)[1], 1)
    array([0.5])
    """
    from scipy.linalg import solve_toeplitz  # lazy: a page that fits no profile never imports scipy (issue 16)

    x = np.asarray(x, dtype=float)
    finite = np.isfinite(x)
    mean = float(x[finite].mean()) if finite.any() else 0.0
    centred = np.where(finite, x - mean, 0.0)
    n = max(int(finite.sum()), 1)
    acov = np.array([centred[: len(x) - k] @ centred[k:] / n for k in range(max_order + 1)])
    best, coefs = n * np.log(max(acov[0], 1e-300)), np.zeros(0)
    for p in range(1, max_order + 1):
        if acov[0] <= 0:
            break
        a = solve_toeplitz(acov[:p], acov[1:p + 1])
        aic = n * np.log(max(acov[0] - a @ acov[1:p + 1], 1e-300)) + 2 * p
        if aic < best:
            best, coefs = aic, a
    residuals = np.where(finite, x - mean, np.nan)
    for i, a in enumerate(coefs, start=1):
        residuals[i:] -= a * np.where(finite[:-i], x[:-i] - mean, np.nan)
    residuals[: len(coefs)] = np.nan
    return mean, coefs, residuals


def _sieve_paths(column: np.ndarray, index: np.ndarray, max_order: int, burn: int) -> np.ndarray:
    """Simulated paths of one reference series: its AR(p) filter driven by block-resampled residuals
    (`index` has `burn` extra leading days, dropped); NaN where the resampled day had no observation."""
    from scipy.signal import lfilter  # lazy: scipy.signal is ~2 s of a page's first visit (issue 16)

    mean, coefs, residuals = ar_sieve(column, max_order)
    shocks = residuals[index]
    missing = np.isnan(shocks)
    paths = lfilter([1.0], np.concatenate([[1.0], -coefs]), np.where(missing, 0.0, shocks), axis=-1) + mean
    paths[missing] = np.nan
    return paths[..., burn:]


def calm_days(returns: Any, window: int = CALM_WINDOW) -> np.ndarray:
    """The reference's calm stretches: days whose trailing `window`-day volatility lies between its
    10th and 90th percentile over the reference. Calibration draws its bootstrap blocks from them,
    so a lasting volatility regime of the reference counts as a change, not as calm.
    >>> returns = np.random.default_rng(0).normal(0, 0.01, 500)
    >>> returns[200:240] *= 4  # a turbulent stretch
    >>> calm = calm_days(returns)
    >>> bool(calm[100]), bool(calm[230]), round(float(calm.mean()), 2)
    (True, False, 0.78)
    """
    volatility = pd.Series(np.asarray(returns, dtype=float)).rolling(window, min_periods=window // 2).std()
    return volatility.between(volatility.quantile(0.1), volatility.quantile(0.9)).to_numpy()


def bootstrap_indices(n: int, n_paths: int, horizon: int, mean_block: float, rng: np.random.Generator,
                      eligible: np.ndarray | None = None) -> np.ndarray:
    """(n_paths, horizon) row indices of a stationary bootstrap of a length-n series (circular);
    blocks start only on `eligible` days (a boolean mask) when given."""
    new_block = rng.random((n_paths, horizon)) < 1.0 / max(mean_block, 1.0)
    new_block[:, 0] = True
    pool = np.flatnonzero(eligible) if eligible is not None and np.any(eligible) else np.arange(n)
    starts = pool[rng.integers(0, len(pool), size=(n_paths, horizon))]
    t = np.arange(horizon)
    block_start = np.maximum.accumulate(np.where(new_block, t, 0), axis=1)
    return (np.take_along_axis(starts, block_start, axis=1) + t - block_start) % n


def running_max(paths: np.ndarray, drift: float, two_sided: bool) -> np.ndarray:
    """Running maximum over time of the CUSUM statistic(s) on `paths`: (n_paths, horizon) or
    (streams, n_paths, horizon); the maximum is also over the streams, and over both sides when
    `two_sided`. Computed in float32 (a calibration, not a record): half the memory traffic."""
    values = np.asarray(paths, dtype=np.float32)
    missing = np.isnan(values) if np.isnan(values).any() else None

    def side(sign: float) -> np.ndarray:
        step = sign * values - np.float32(drift)
        if missing is not None:
            step[missing] = 0.0  # no observation that day: the statistic stays where it was
        walk = np.cumsum(step, axis=-1)
        return walk - np.minimum(np.minimum.accumulate(walk, axis=-1), np.float32(0.0))

    stat = side(1.0)
    if two_sided:
        np.maximum(stat, side(-1.0), out=stat)
    if stat.ndim == 3:
        stat = stat.max(axis=0)
    return np.maximum.accumulate(stat, axis=-1)


class _Component:
    """Running maxima of one CUSUM component on the simulated paths; ARL(h) and h(ARL)."""

    def __init__(self, maxima: np.ndarray):
        self.maxima = maxima
        self.n_paths, self.horizon = maxima.shape
        self.sorted_all = np.sort(maxima, axis=None).astype(float)  # float64: searchsorted never casts
        self.sorted_last = np.sort(maxima[:, -1]).astype(float)

    def arl(self, h: float) -> float:
        alarms = self.n_paths - np.searchsorted(self.sorted_last, h, side="left")
        at_risk = np.searchsorted(self.sorted_all, h, side="left") + alarms
        return float(at_risk / alarms) if alarms else np.inf

    def threshold(self, target: float) -> float:
        lo, hi = 0.0, float(self.sorted_all[-1])
        if hi <= 0.0:  # the statistic never left zero in calm paths: any evidence at all is an alarm
            return float(np.finfo(float).tiny)
        if self.arl(hi) < target:  # too few paths survive that long: extrapolate log(ARL) linearly in h
            a0, a1 = np.log(self.arl(hi / 2.0)), np.log(self.arl(hi))
            return float(hi + (np.log(target) - a1) / max((a1 - a0) / (hi / 2.0), 1e-9))
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.arl(mid) < target else (lo, mid)
        return hi

    def run_lengths(self, h: float) -> np.ndarray:
        """Days until the first alarm on each path (horizon + 1 when there was none)."""
        return (self.maxima < h).sum(axis=1) + 1


def _combined_arl(components: list[_Component], thresholds: list[float]) -> float:
    first = np.min([c.run_lengths(h) for c, h in zip(components, thresholds)], axis=0)
    horizon = components[0].horizon
    alarms = int((first <= horizon).sum())
    return float(np.minimum(first, horizon).sum() / alarms) if alarms else np.inf


def calibrate(streams: dict[str, Stream], arl_days: float | None = None, n_paths: int = 400,
              horizon: int = 500, seed: int = 0, mean_block: float | str | None = None,
              ar_order: int = 5, calm: np.ndarray | None = None) -> Calibration:
    """Thresholds for every detector so that the model's first false alarm comes after ~`arl_days` days.

    streams: detector name -> its reference innovations (see `Stream`); arl_days: the in-control
    average run length of the model (default `MLSA_DRIFT_ARL_DAYS`, 250 trading days: about one
    false alarm per model per year); n_paths x horizon: the bootstrap's size; seed: same inputs and
    seed give the same thresholds; mean_block: the bootstrap's mean block length in days (default
    ceil(n^(1/3)); "auto": Politis & White's choice, see `block_length`); ar_order: the largest
    order of the AR sieve (0: resample the series itself). See the module docstring.
    """
    target = float(arl_days if arl_days is not None else get_settings().drift_arl_days)
    if target <= 1:
        raise ValueError(f"arl_days must be more than 1 trading day, got {target}")
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for name, stream in streams.items():
        groups.setdefault(stream.group or name, []).append(name)
    components, owners, lengths = [], [], {}
    for group, names in groups.items():
        arrays = [np.asarray(streams[name].values, dtype=float) for name in names]
        n = len(arrays[0])
        if n < 30 or any(len(a) != n for a in arrays):
            raise ValueError(f"group {group!r}: every detector needs the same >= 30 reference days, "
                             f"got {[len(a) for a in arrays]}")
        columns = [a.reshape(n, -1)[:, j] for a in arrays for j in range(a.reshape(n, -1).shape[1])]
        lengths[group] = (max(block_length(c) for c in columns) if mean_block == "auto"
                          else float(mean_block or np.ceil(n ** (1 / 3))))
        burn = 10 * ar_order
        index = bootstrap_indices(n, n_paths, horizon + burn, lengths[group], rng,
                                  None if calm is None or len(calm) != n else calm)
        for name, values in zip(names, arrays):
            columns = values.reshape(n, -1).T
            paths = np.stack([_sieve_paths(c, index, ar_order, burn) for c in columns])  # (streams, paths, days)
            paths = paths[0] if values.ndim == 1 else paths
            for drift in streams[name].drifts:
                components.append(_Component(running_max(paths, drift, streams[name].two_sided)))
                owners.append(name)
    lo, hi = np.log(target), np.log(target * (2.0 + len(components)))
    while _combined_arl(components, [c.threshold(np.exp(hi)) for c in components]) < target and hi < 30:
        hi += 1.0
    for _ in range(18):
        mid = 0.5 * (lo + hi)
        combined = _combined_arl(components, [c.threshold(np.exp(mid)) for c in components])
        lo, hi = (mid, hi) if combined < target else (lo, mid)
    hs = [c.threshold(np.exp(hi)) for c in components]
    thresholds = {name: tuple(float(h) for h, owner in zip(hs, owners) if owner == name) for name in streams}
    return Calibration(thresholds, target, float(np.exp(hi)), _combined_arl(components, hs), lengths)


def siegmund_arl(h: float, drift: float, mean: float = 0.0, two_sided: bool = True) -> float:
    """Siegmund's (1985) approximation of a CUSUM's ARL for i.i.d. N(mean, 1) innovations.

    ARL = (exp(-2 d b) + 2 d b - 1) / (2 d^2) with d = mean - drift and b = h + 1.166; the two
    sides of a two-sided CUSUM combine as 1/ARL = 1/ARL+ + 1/ARL-.
    >>> round(siegmund_arl(4.0, 0.5, two_sided=False))
    338
    """
    def one_side(d: float) -> float:
        b = h + 1.166
        return b * b if abs(d) < 1e-12 else (np.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d)

    up = one_side(mean - drift)
    return float(1.0 / (1.0 / up + 1.0 / one_side(-mean - drift))) if two_sided else float(up)
