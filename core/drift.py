"""Drift detection: PSI, KS, Wasserstein, performance, concept and prediction drift, streaming detectors; owns `drift_checks`.

Two windows are compared: `reference` (the features a model was trained on) and `current` (the last
`window_days` trading days up to `as_of`). `compare_frames` is the pure, storage-free core: one
vectorised pass computes PSI, the KS statistic and the Wasserstein distance for every column. Its
dataset-level verdict controls false alarms across ~20 features with two guards at once: a feature
counts as drifted only when PSI says the shift is large (>= `drift_psi_threshold`) AND KS says it is
significant at a Bonferroni-corrected alpha (`drift_ks_alpha / n_features`); the dataset drifts only
when the share of drifted features reaches `drift_share_threshold`. `check_model` adds performance,
concept, prediction and streaming checks and stores one `DriftReport` per call in `drift_checks`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils
from scipy import stats

try:  # scipy's exact two-sample KS p-value, the routine ks_2samp itself calls (see _exact_ks_p)
    from scipy.stats._stats_py import _attempt_exact_2kssamp as _scipy_exact_ks
except ImportError:  # pragma: no cover - a future scipy; the public ks_2samp is used instead
    _scipy_exact_ks = None

from core import drift_watch  # hook (issue 13): sequential alarms (when it changed) join the verdict
from core.config import Settings, get_settings
from core.features import build_features
from core.market import MarketDataError, last_trading_day, load_prices
from core.predict import prediction_log
from core.registry import get_model, validation_predictions
from core.store import get_db, to_json, transaction, utc_now

log = logging.getLogger(__name__)

SEVERITIES = ("none", "moderate", "significant", "critical")
MIN_SAMPLES = 5  # fewer finite values than this in either window: the column is "insufficient data"
PSI_EPSILON = 1e-4  # floor for empty bins (DESIGN.md), so ln(a / e) stays finite
EXACT_KS_MAX_N = 10_000  # scipy's own 'auto' rule: exact KS p-values up to this size, asymptotic above
MISSING_RATE_JUMP = 0.10  # a rise of 10 points in the share of missing values is a data-quality drift
MIN_PERF_SAMPLES = 10  # predictions with actuals needed before the performance check speaks
VOL_RATIO_LIMIT = 1.5  # realised volatility x1.5 (or /1.5) with a significant Levene test = concept drift
COLUMN_BLOCK = 8  # columns processed together: bounds memory (a few arrays of block x rows) on wide frames
PARALLEL_MIN_VALUES = 20_000  # rows in both samples from which blocks of columns run in threads

_FLIP = np.int64(0x7FFFFFFFFFFFFFFF)
_NONFINITE_KEY = np.int64(0x7FFFFFFFFFFFFFFE)


class DriftInputError(ValueError):
    """Frames or a model that a drift check cannot use (missing columns, too few rows, no history)."""


class BeyondDataError(DriftInputError):
    """An as_of after the last trading day the data has: nothing is computed or stored for such a day."""


# --- validation (the one place) --------------------------------------------------------------------

def _kind(column: pd.Series) -> str:
    """"numeric", "categorical" (pandas `category` dtype: declared on purpose) or "text" (anything else)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return "categorical"
    return "numeric" if pd.api.types.is_numeric_dtype(column.dtype) else "text"


def check_frames(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric columns, categorical columns) of `reference`, after checking both frames can be compared.

    Raises DriftInputError, naming the column and the fix, when a frame is empty or too short, has
    duplicate column names, `current` lacks a reference column, a column holds plain text (numbers
    read as strings, or categories not declared with `.astype("category")`), a column's kind differs
    between the windows, or a column has no value at all in the reference. Extra columns in `current`
    are ignored; NaN and inf are missing values (a column that is all missing in `current` only is a
    data-quality drift, not an input error).
    """
    for name, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise DriftInputError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}.")
        if frame.shape[1] == 0:
            raise DriftInputError(f"{name} has no columns: pass the feature frame.")
        duplicated = list(dict.fromkeys(frame.columns[frame.columns.duplicated()]))
        if duplicated:
            raise DriftInputError(f"{name} has duplicate column name(s) {', '.join(map(repr, duplicated))}: each feature must "
                                  "appear once; rename or drop the copies (df.loc[:, ~df.columns.duplicated()]).")
        if len(frame) < MIN_SAMPLES:
            raise DriftInputError(f"{name} has {len(frame)} row(s); at least {MIN_SAMPLES} are needed to compare distributions.")
    missing = [c for c in reference.columns if c not in current.columns]
    if missing:
        raise DriftInputError(f"current lacks the column(s) {', '.join(map(str, missing))} present in reference.")
    numeric, categorical = [], []
    for column in reference.columns:
        kinds = _kind(reference[column]), _kind(current[column])
        if "text" in kinds:
            raise DriftInputError(
                f"column {column!r} holds text ({reference[column].dtype} in reference, {current[column].dtype} in current): "
                f"convert numbers with pd.to_numeric(frame[{column!r}]), or declare categories with "
                f"frame[{column!r}].astype('category') in both frames.")
        if kinds[0] != kinds[1]:
            raise DriftInputError(f"column {column!r} is {kinds[0]} in reference but {kinds[1]} in current: "
                                  "give it the same type in both frames.")
        values = reference[column]
        present = np.isfinite(values.astype(float).to_numpy()) if kinds[0] == "numeric" else values.notna().to_numpy()
        if not present.any():
            raise DriftInputError(f"column {column!r} has no value in the reference (all missing): there is nothing to "
                                  "compare against; drop the column or fix the reference data.")
        (numeric if kinds[0] == "numeric" else categorical).append(column)
    return numeric, categorical


def _as_matrix(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Column-major float matrix (columns x rows): each column's values are contiguous for sorting."""
    return np.ascontiguousarray(frame[columns].to_numpy(dtype=float).T)


# --- vectorised statistics ---------------------------------------------------------------------------

def _order_keys(values: np.ndarray, tag: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 -> int64 keys in the same order with the lowest bit replaced by `tag` (0 ref, 1 current).

    Sorting the keys of both samples together gives the joint order and, in the lowest bit, which
    sample each value came from, with one sort and no argsort. Values 1 ulp apart count as ties
    (relative error 1e-16). Non-finite values get the largest key: they sort last and are skipped.
    Returns (keys, finite values per row).
    """
    keys = (values + 0.0).view(np.int64)  # a fresh copy; + 0.0 turns -0.0 into +0.0
    keys ^= (keys >> 63) & _FLIP  # negative floats: reverse the magnitude bits (branch-free)
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    if (counts < values.shape[1]).any():
        keys[~finite] = _NONFINITE_KEY
    if tag:
        keys |= np.int64(1)
    else:
        keys &= ~np.int64(1)
    return keys, counts


def _key_values(keys: np.ndarray) -> np.ndarray:
    """Inverse of `_order_keys` (tag bit cleared): the float values, to within 1 ulp."""
    bits = keys & ~np.int64(1)
    bits ^= (bits >> 63) & _FLIP
    return bits.view(np.float64)


def _block_stats(ref: np.ndarray, cur: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """PSI, KS statistic and raw Wasserstein-1 for each row of `ref` (k x n) vs `cur` (k x m)."""
    k, n = ref.shape
    (ref_keys, n_ref), (cur_keys, n_cur) = _order_keys(ref, 0), _order_keys(cur, 1)
    keys = np.concatenate([ref_keys, cur_keys], axis=1)
    del ref_keys, cur_keys
    keys.sort(axis=1)
    tag_byte = (keys.view(np.uint8)[:, ::8] if sys.byteorder == "little" else keys) & np.uint8(1)
    is_cur = tag_byte.astype(bool)
    # n_ref * (F_ref - F_cur) after each value = position - cum_cur * (1 + n_ref / n_cur), in place
    scaled_gap = np.cumsum(tag_byte, axis=1, dtype=np.float64)
    scaled_gap *= -(1.0 + n_ref / np.maximum(n_cur, 1))[:, None]
    scaled_gap += np.arange(1, keys.shape[1] + 1, dtype=np.float64)
    np.abs(scaled_gap, out=scaled_gap)
    tie_inside = np.zeros_like(is_cur)
    tie_inside[:, :-1] = (keys[:, 1:] ^ keys[:, :-1]).view(np.uint64) <= 1  # equal but the tag: evaluate after the last
    if tie_inside.any():
        scaled_gap[tie_inside] = 0.0
    values = _key_values(keys)
    all_finite = bool((n_ref == n).all() and (n_cur == cur.shape[1]).all())
    if not all_finite:
        finite = np.arange(1, keys.shape[1] + 1) <= (n_ref + n_cur)[:, None]
        scaled_gap[~finite] = 0.0
    denominator = np.maximum(n_ref, 1).astype(float)
    ks_stat = scaled_gap.max(axis=1) / denominator
    step = np.diff(values, axis=1)
    if not all_finite:
        step[~finite[:, 1:]] = 0.0
    wasserstein = np.einsum("ij,ij->i", scaled_gap[:, :-1], step) / denominator

    # PSI: deciles of the reference (np.quantile's linear rule), the same edges for both samples
    ref_sorted = values[~is_cur].reshape(k, n)
    cur_values = values[is_cur].reshape(k, -1)
    quantile_pos = np.arange(1, bins) / bins * (np.maximum(n_ref, 1) - 1)[:, None]
    lo, frac = np.floor(quantile_pos).astype(np.int64), quantile_pos % 1.0
    low = np.take_along_axis(ref_sorted, lo, axis=1)
    high = np.take_along_axis(ref_sorted, np.minimum(lo + 1, n - 1), axis=1)
    edges = np.where(frac > 0, low + (high - low) * frac, low)
    below_ref = _below(ref_sorted, edges)
    below_cur = _below(cur_values, edges)
    safe_ref, safe_cur = np.maximum(n_ref, 1)[:, None], np.maximum(n_cur, 1)[:, None]
    expected = np.diff(np.column_stack([np.zeros(k), below_ref, n_ref]), axis=1) / safe_ref
    actual = np.diff(np.column_stack([np.zeros(k), below_cur, n_cur]), axis=1) / safe_cur
    expected, actual = np.maximum(expected, PSI_EPSILON), np.maximum(actual, PSI_EPSILON)
    psi_values = ((actual - expected) * np.log(actual / expected)).sum(axis=1)
    # far outside the training range: beyond [min, max] widened by the range itself on each side; for a
    # constant reference (span 0) that is simply "differs from the constant"
    ref_min = ref_sorted[:, 0]
    ref_max = np.take_along_axis(ref_sorted, np.maximum(n_ref - 1, 0)[:, None], axis=1)[:, 0]
    span = ref_max - ref_min
    inside = _inside(cur_values, ref_min - span, ref_max + span)
    with np.errstate(invalid="ignore", divide="ignore"):
        finite_ref = np.where(np.arange(n) < n_ref[:, None], ref_sorted, np.nan) if (n_ref < n).any() else ref_sorted
        std = np.nanstd(finite_ref, axis=1) if (n_ref < n).any() else ref_sorted.std(axis=1)
    return {"psi": psi_values, "ks_stat": ks_stat, "wasserstein_raw": wasserstein, "n_ref": n_ref, "n_cur": n_cur,
            "out_of_range": (n_cur - inside) / safe_cur[:, 0], "ref_std": std,
            "ref_constant": (span == 0) & (n_ref > 0), "ref_min": ref_min}


def _inside(sorted_rows: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Values in the closed interval [low, high] of each sorted row (NaN last, never inside)."""
    return np.array([np.searchsorted(values, hi, "right") - np.searchsorted(values, lo, "left")
                     for values, lo, hi in zip(sorted_rows, low, high)], dtype=float)


def _exact_ks_p(n1: int, n2: int, statistic: float, ref: np.ndarray, cur: np.ndarray) -> float:
    """The p-value scipy.stats.ks_2samp reports for samples of these sizes (method 'auto', <= 10,000).

    Calls scipy's own exact routine directly (27 us) instead of ks_2samp's public wrapper (~3 ms of
    argument handling per call); falls back to the public function if a scipy release moves it.
    """
    if _scipy_exact_ks is None:
        return float(stats.ks_2samp(ref[np.isfinite(ref)], cur[np.isfinite(cur)]).pvalue)
    g = math.gcd(n1, n2)
    if n1 // g < np.iinfo(np.int32).max / (n2 // g):
        success, _, prob = _scipy_exact_ks(n1, n2, g, statistic, "two-sided")
        if success:
            return float(prob)
    big, small = max(n1, n2), min(n1, n2)  # scipy's fallback: Smirnov's asymptotic distribution
    return float(stats.kstwo.sf(statistic, np.round(big * small / (big + small))))


def _below(sorted_rows: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Values below each edge in each sorted row (NaN last), a value equal to an edge counting one half.

    Splitting point masses at an edge keeps PSI symmetric for discrete features and constant
    columns: with a constant reference every edge is that constant, half of it falls on each side,
    and a current sample above or below it moves all its mass into an outer bin (PSI ~4.6).
    Rows are sorted already, so this is two binary searches per edge, not a pass over the values.
    """
    counts = np.empty(edges.shape)
    for row, (values, row_edges) in enumerate(zip(sorted_rows, edges)):  # one row per column: ~50, not per value
        counts[row] = (np.searchsorted(values, row_edges, "left") + np.searchsorted(values, row_edges, "right")) / 2
    return counts


def _bin_weights(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each value's weight in each PSI bin (rows x values x bins), with `_below`'s half rule at edges."""
    below = (values[:, :, None] < edges[:, None, :]) + 0.5 * (values[:, :, None] == edges[:, None, :])
    finite = np.isfinite(values)[:, :, None].astype(float)
    padded = np.concatenate([np.zeros_like(finite), below * finite, finite], axis=2)
    return np.diff(padded, axis=2)


def psi_null(ref: np.ndarray, window: int, psi_current: np.ndarray, bins: int = 10) -> np.ndarray:
    """Share of the reference's own `window`-long stretches whose PSI (vs the whole reference) is at
    least `psi_current`: an empirical p-value that carries the feature's autocorrelation with it.

    A 20-day rolling volatility drifts through its range in a few weeks, so a calm month can have a
    PSI of 3 against four years of history; whether 3 is unusual is answered by the training period
    itself. Rows are time-ordered series; (1 + exceedances) / (1 + windows), NaN if the reference is
    shorter than two windows.
    """
    k, n = ref.shape
    if n < 2 * window:
        return np.full(k, np.nan)
    edges = np.nanquantile(np.where(np.isfinite(ref), ref, np.nan), np.arange(1, bins) / bins, axis=1).T
    weights = _bin_weights(ref, edges)  # k x n x bins
    expected = np.maximum(weights.sum(axis=1) / np.maximum(weights.sum(axis=(1, 2)), 1)[:, None], PSI_EPSILON)
    cumulative = np.concatenate([np.zeros((k, 1, bins)), np.cumsum(weights, axis=1)], axis=1)
    counts = cumulative[:, window:] - cumulative[:, :-window]  # k x windows x bins, one pass
    actual = np.maximum(counts / np.maximum(counts.sum(axis=2, keepdims=True), 1), PSI_EPSILON)
    window_psi = ((actual - expected[:, None, :]) * np.log(actual / expected[:, None, :])).sum(axis=2)
    exceed = (window_psi >= psi_current[:, None] - 1e-12).sum(axis=1)
    return (1 + exceed) / (1 + window_psi.shape[1])


def column_stats(ref: np.ndarray, cur: np.ndarray, bins: int = 10, serial: bool = False) -> pd.DataFrame:
    """PSI, KS (statistic, p-value) and Wasserstein / reference std for each row of two column-major matrices.

    One sort per block of columns serves all three statistics. KS p-values: scipy's exact p-value
    when both samples have <= 10,000 values (scipy's own 'auto' rule: identical to ks_2samp), else
    Kolmogorov's limiting distribution with Stephens' correction, kstwobign.sf((sqrt(en) + 0.12 +
    0.11 / sqrt(en)) D), vectorised. scipy's kstwo.sf(D, en) there costs ~20 ms per column (1 s of
    a 50-column check) and differs by < 2e-3 in absolute value (~10% relative in the far tail,
    p < 1e-10), which no threshold here can see.
    With `serial` (rows are consecutive days, as daily features are), `psi_p_value` adds the
    empirical p-value of each PSI among the reference's own windows of the current length
    (`psi_null`): KS and PSI assume independent values, daily rolling features are far from it.
    Columns with fewer than MIN_SAMPLES finite values in either sample get NaN.
    """
    if bins < 2:
        raise DriftInputError(f"bins must be at least 2, got {bins}.")
    starts = range(0, ref.shape[0], COLUMN_BLOCK)
    work = [(ref[i:i + COLUMN_BLOCK], cur[i:i + COLUMN_BLOCK], bins) for i in starts]
    if len(work) > 1 and ref.shape[1] + cur.shape[1] >= PARALLEL_MIN_VALUES:
        # numpy releases the GIL in sort and ufuncs: blocks of columns run side by side on the cores
        with ThreadPoolExecutor(max_workers=min(len(work), os.cpu_count() or 1)) as pool:
            blocks = list(pool.map(lambda args: _block_stats(*args), work))
    else:
        blocks = [_block_stats(*args) for args in work]
    out = pd.DataFrame({key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]})
    n_ref, n_cur = out["n_ref"].to_numpy(), out["n_cur"].to_numpy()
    p_value = np.full(len(out), np.nan)
    large = np.maximum(n_ref, n_cur) > EXACT_KS_MAX_N
    en = np.round(np.maximum(n_ref, 1) * n_cur / np.maximum(n_ref + n_cur, 1))
    root = np.sqrt(np.maximum(en[large], 1))  # Kolmogorov's limit with Stephens' (1970) small-sample correction
    p_value[large] = stats.kstwobign.sf((root + 0.12 + 0.11 / root) * out["ks_stat"].to_numpy()[large])
    usable = (n_ref >= MIN_SAMPLES) & (n_cur >= MIN_SAMPLES)
    for j in np.flatnonzero(~large & usable):  # small samples only: scipy's exact p-value
        p_value[j] = _exact_ks_p(int(n_ref[j]), int(n_cur[j]), float(out["ks_stat"].iloc[j]), ref[j], cur[j])
    out["p_value"] = np.clip(p_value, 0.0, 1.0)
    if serial:
        window = cur.shape[1]
        out["psi_p_value"] = np.concatenate([
            psi_null(ref[i:i + COLUMN_BLOCK], window, out["psi"].to_numpy()[i:i + COLUMN_BLOCK], bins)
            for i in range(0, ref.shape[0], COLUMN_BLOCK)])
        out.loc[~usable, "psi_p_value"] = np.nan
    std = out.pop("ref_std").to_numpy()
    out["wasserstein"] = np.where(std > 0, out["wasserstein_raw"] / np.where(std > 0, std, 1.0), out["wasserstein_raw"])
    out.loc[~usable, ["psi", "ks_stat", "p_value", "wasserstein", "wasserstein_raw", "out_of_range"]] = np.nan
    return out


def _vector(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if np.isfinite(array).sum() < MIN_SAMPLES:
        raise DriftInputError(f"{name} has {int(np.isfinite(array).sum())} finite value(s); at least {MIN_SAMPLES} are needed.")
    return array


def psi(reference: Any, current: Any, bins: int = 10) -> float:
    """Population Stability Index of `current` against `reference` (unitless, >= 0).

    Bins are the reference deciles (outer bins open to +-inf; a value equal to an edge counts half in
    each neighbouring bin), the same edges for the current sample, empty bins floored at 1e-4;
    PSI = sum((a - e) * ln(a / e)). Bands (industry convention, DESIGN.md): < 0.1 none, 0.1-0.25
    moderate, >= 0.25 significant. A constant reference: PSI is 0 if current equals it, ~4.6 if all
    of current lies above (or below) it.

    >>> round(psi(np.arange(100.0), np.arange(100.0)), 6)
    0.0
    """
    ref, cur = _vector(reference, "reference"), _vector(current, "current")
    return float(column_stats(ref[None, :], cur[None, :], bins)["psi"].iloc[0])


def ks_test(reference: Any, current: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp): (statistic, p-value); NaN/inf dropped."""
    ref, cur = _vector(reference, "reference"), _vector(current, "current")
    result = stats.ks_2samp(ref[np.isfinite(ref)], cur[np.isfinite(cur)])
    return float(result.statistic), float(result.pvalue)


def wasserstein(reference: Any, current: Any) -> float:
    """Wasserstein-1 distance in units of the reference standard deviation (raw distance if that is 0).

    >>> round(wasserstein([0.0, 1, 2, 3, 4], [1.0, 2, 3, 4, 5]), 4)  # shift of 1 / std sqrt(2)
    0.7071
    """
    ref, cur = _vector(reference, "reference"), _vector(current, "current")
    return float(column_stats(ref[None, :], cur[None, :])["wasserstein"].iloc[0])


def psi_band(value: float, settings: Settings | None = None) -> str:
    """'none', 'moderate' or 'significant' for a PSI value (thresholds from config)."""
    settings = settings or get_settings()
    if not np.isfinite(value):
        return "insufficient data"
    if value >= settings.drift_psi_threshold:
        return "significant"
    return "moderate" if value >= settings.drift_psi_moderate else "none"


# --- frames ------------------------------------------------------------------------------------------

@dataclass
class FrameComparison:
    """Per-feature statistics and the dataset-level verdict of `compare_frames`."""

    features: pd.DataFrame
    n_features: int
    n_drifted: int
    drifted_share: float
    dataset_drift: bool
    alpha_corrected: float
    rule: str


def _categorical_row(ref: pd.Series, cur: pd.Series) -> dict[str, Any]:
    """PSI over category frequencies (an unseen category is its own bin) and the new categories."""
    ref_counts = ref.dropna().astype(str).value_counts(normalize=True)
    cur_counts = cur.dropna().astype(str).value_counts(normalize=True)
    categories = ref_counts.index.union(cur_counts.index)
    e = np.maximum(ref_counts.reindex(categories, fill_value=0).to_numpy(), PSI_EPSILON)
    a = np.maximum(cur_counts.reindex(categories, fill_value=0).to_numpy(), PSI_EPSILON)
    return {"psi": float(((a - e) * np.log(a / e)).sum()), "ks_stat": np.nan, "p_value": np.nan, "wasserstein": np.nan,
            "psi_p_value": np.nan, "out_of_range": np.nan,
            "new_categories": sorted(set(cur_counts.index) - set(ref_counts.index))}


def compare_frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    bins: int = 10,
    settings: Settings | None = None,
    serial: bool = False,
) -> FrameComparison:
    """Compare every column of `current` with `reference`; pure (no storage, no clock).

    Per feature: psi, ks_stat, p_value, wasserstein (/ reference std), missing rates, new categories
    and a verdict: "drift" when PSI >= drift_psi_threshold and the KS p-value < drift_ks_alpha / k
    (Bonferroni over the k features), or the missing rate rose by >= 10 points, or a new category
    appeared, or a current value lies beyond the reference's [min, max] widened by its range on each
    side (`out_of_range`, the share of such values: scale / units changes); "moderate" when PSI >= drift_psi_moderate and p < drift_ks_alpha; else "none".
    Dataset drift: at least drift_share_threshold of the features drift (see the module docstring).
    With `serial` (rows are consecutive days), a feature must also have a PSI p-value (among the
    reference's own windows of the current length, see `psi_null`) under drift_ks_alpha.
    """
    settings = settings or get_settings()
    numeric, other = check_frames(reference, current)
    k = len(numeric) + len(other)
    alpha_corrected = settings.drift_ks_alpha / k
    ref_matrix, cur_matrix = _as_matrix(reference, numeric), _as_matrix(current, numeric)
    table = column_stats(ref_matrix, cur_matrix, bins, serial=serial) if numeric else pd.DataFrame()
    if not serial and numeric:
        table["psi_p_value"] = np.nan
    stat_columns = ["psi", "ks_stat", "p_value", "wasserstein", "psi_p_value", "out_of_range"]
    numeric_rows = table[stat_columns].assign(feature=numeric) if numeric else pd.DataFrame(columns=["feature", *stat_columns])
    numeric_rows["new_categories"] = [[] for _ in numeric]
    other_rows = pd.DataFrame([{"feature": name, **_categorical_row(reference[name], current[name])} for name in other],
                              columns=["feature", *stat_columns, "new_categories"])
    features = pd.concat([df for df in (numeric_rows, other_rows) if not df.empty] or [other_rows], ignore_index=True)
    features = features[["feature", *stat_columns, "new_categories"]]
    features["missing_ref"] = np.concatenate([1 - table["n_ref"].to_numpy() / len(reference) if numeric else [],
                                              reference[other].isna().mean().to_numpy()])
    features["missing_cur"] = np.concatenate([1 - table["n_cur"].to_numpy() / len(current) if numeric else [],
                                              current[other].isna().mean().to_numpy()])
    features["note"] = _constant_notes(table) + [""] * len(other) if numeric else [""] * len(other)
    features["verdict"] = _verdicts(features, settings, alpha_corrected)
    n_drifted = int((features["verdict"] == "drift").sum())
    share = n_drifted / k
    rule = (f"feature drifts: PSI >= {settings.drift_psi_threshold:g} and KS p < {alpha_corrected:.2g} "
            f"({settings.drift_ks_alpha:g} / {k})"
            + (f" and PSI unusual vs the reference's own windows (p < {settings.drift_ks_alpha:g})" if serial else "")
            + f"; dataset drifts: >= {settings.drift_share_threshold:.0%} of features")
    return FrameComparison(features=features, n_features=k, n_drifted=n_drifted, drifted_share=share,
                           dataset_drift=share >= settings.drift_share_threshold, alpha_corrected=alpha_corrected, rule=rule)


def _constant_notes(table: pd.DataFrame) -> list[str]:
    """Per numeric column: what a constant reference means (an index's volume of 0 is constant in both
    windows: no drift; a constant that changes is drift, said plainly rather than as "out of range")."""
    notes = []
    for constant, value, share in table[["ref_constant", "ref_min", "out_of_range"]].itertuples(index=False):
        if not constant or not np.isfinite(share):
            notes.append("")
        elif share == 0:
            notes.append(f"constant in both windows ({value:g}): no drift")
        else:
            notes.append(f"constant at {value:g} in the reference; {share:.0%} of current values differ")
    return notes


def distribution_drift(psi_values: np.ndarray, p_values: np.ndarray, psi_p_values: np.ndarray, n_features: int,
                       psi_threshold: float, ks_alpha: float) -> np.ndarray:
    """The per-feature rule on arrays (any shape): PSI large AND KS significant at the Bonferroni
    level alpha / n_features AND (for daily series) the PSI unusual for this feature at alpha.

    Each view alone fails: PSI is noisy on a 30-day window (10 bins, 3 expected values each), KS flags
    tiny shifts in large samples, and both treat autocorrelated days as independent, so on daily
    features they fire in most calm months (bench/drift_quality.py: 39-90% false alarms). The PSI
    null is taken at alpha, not alpha / k: its windows overlap, and the bench shows alpha / k leaves
    the rule blind (0% false alarms, ~0% detections). NaN p-values (categorical columns; no serial
    null) pass their side.
    """
    p_values = np.where(np.isnan(p_values), 0.0, p_values)
    psi_p_values = np.where(np.isnan(psi_p_values), 0.0, psi_p_values)
    with np.errstate(invalid="ignore"):
        return (psi_values >= psi_threshold) & (p_values < ks_alpha / n_features) & (psi_p_values < ks_alpha)


def _verdicts(features: pd.DataFrame, settings: Settings, alpha_corrected: float) -> np.ndarray:
    psi_values, p = features["psi"].to_numpy(dtype=float), features["p_value"].to_numpy(dtype=float)
    psi_p = features["psi_p_value"].to_numpy(dtype=float)
    categorical = features["ks_stat"].isna().to_numpy() & np.isfinite(psi_values)
    missing_jump = (features["missing_cur"] - features["missing_ref"]).to_numpy() >= MISSING_RATE_JUMP
    new_categories = features["new_categories"].map(bool).to_numpy()
    far_outside = features["out_of_range"].to_numpy(dtype=float) > 0
    drift = (distribution_drift(psi_values, np.where(categorical, np.nan, p), psi_p, len(features),
                                settings.drift_psi_threshold, settings.drift_ks_alpha)
             | missing_jump | new_categories | far_outside)
    moderate = ((psi_values >= settings.drift_psi_moderate) & np.where(categorical, True, p < settings.drift_ks_alpha)
                & ~(psi_p >= settings.drift_ks_alpha))
    verdict = np.where(drift, "drift", np.where(moderate, "moderate", "none"))
    return np.where(~np.isfinite(psi_values) & ~drift, "insufficient data", verdict)


# --- the model-level report ----------------------------------------------------------------------------

@dataclass
class DriftReport:
    """Everything one drift check found; `to_dict` / `from_dict` round-trip it through JSON.

    `reference` and `current` (the two feature windows) ride along for the page's overlays but are
    not serialised.
    """

    model_id: str
    as_of: str
    window_days: int
    overall_drift: bool
    severity: str
    reasons: list[str]
    features: pd.DataFrame
    performance: dict
    concept: dict
    prediction: dict
    streaming: dict
    dataset: dict = field(default_factory=dict)
    sequential: list = field(default_factory=list)  # hook (issue 13): current alarms of core/drift_watch.py
    reference: pd.DataFrame | None = field(default=None, repr=False)
    current: pd.DataFrame | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        features = self.features.astype(object).where(self.features.notna(), None)
        return {
            "model_id": self.model_id, "as_of": self.as_of, "window_days": int(self.window_days),
            "overall_drift": bool(self.overall_drift), "severity": self.severity, "reasons": list(self.reasons),
            "features": features.to_dict("records"), "performance": self.performance, "concept": self.concept,
            "prediction": self.prediction, "streaming": self.streaming, "dataset": self.dataset,
            "sequential": self.sequential,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DriftReport":
        features = pd.DataFrame(data.get("features") or [], columns=FEATURE_TABLE_COLUMNS)
        features["note"] = features["note"].fillna("")  # reports stored before the column existed
        for column in ("psi", "ks_stat", "p_value", "wasserstein", "psi_p_value", "out_of_range", "missing_ref", "missing_cur"):
            features[column] = pd.to_numeric(features[column], errors="coerce")
        return cls(
            model_id=data["model_id"], as_of=data["as_of"], window_days=int(data["window_days"]),
            overall_drift=bool(data["overall_drift"]), severity=data["severity"], reasons=list(data["reasons"]),
            features=features, performance=data.get("performance", {}), concept=data.get("concept", {}),
            prediction=data.get("prediction", {}), streaming=data.get("streaming", {}), dataset=data.get("dataset", {}),
            sequential=data.get("sequential", []),
        )

    def to_json(self) -> str:
        return to_json(self.to_dict())


FEATURE_TABLE_COLUMNS = ["feature", "psi", "ks_stat", "p_value", "wasserstein", "verdict", "psi_p_value",
                         "out_of_range", "missing_ref", "missing_cur", "new_categories", "note"]


def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


def _clean(value: Any) -> Any:
    """JSON-safe scalars: NaN / inf become None, numpy scalars become Python ones."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def model_windows(model: dict, as_of, window_days: int,
                  db: sqlite_utils.Database | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, current) feature frames: the training window, and the last `window_days` days to `as_of`."""
    db = db or get_db()
    symbol, columns = model["symbol"], model["features"]
    if window_days < MIN_SAMPLES:
        raise DriftInputError(f"window_days must be at least {MIN_SAMPLES}, got {window_days}.")
    as_of = pd.Timestamp(as_of)
    train_start, train_end = pd.Timestamp(model["train_start"]), pd.Timestamp(model["train_end"])
    warmup_start = train_start - pd.Timedelta(days=120)  # > 50 trading days: the longest feature window
    prices = load_prices(symbol, start=warmup_start, end=max(as_of, train_end), db=db)
    features = build_features(prices, symbol)
    reference = features.loc[train_start:train_end, columns]
    current = features.loc[(features.index > train_end) & (features.index <= as_of), columns].iloc[-window_days:]
    if len(current) < MIN_SAMPLES:
        raise DriftInputError(
            f"{model['model_id']}: only {len(current)} trading day(s) after its training window "
            f"(ends {train_end:%Y-%m-%d}) up to {as_of:%Y-%m-%d}; pick a later date (at least {MIN_SAMPLES} days needed)."
        )
    return reference, current


def data_ends(symbols: list[str], db: sqlite_utils.Database | None = None) -> dict[str, pd.Timestamp]:
    """The last trading day the data has for each ticker: "today" for every check and cycle (with live
    yfinance data that is today's close once it is in; on the bundled data, the file's last day)."""
    return {symbol: last_trading_day(symbol, db=db) for symbol in symbols}


def check_within_data(as_of, ends: dict[str, pd.Timestamp]) -> pd.Timestamp:
    """`as_of` as a Timestamp, or BeyondDataError when it is after the last day of all of `ends`
    (ticker -> last data day), naming that day: nothing may be computed or stored for a day with no data."""
    as_of = pd.Timestamp(as_of)
    if not ends:
        return as_of
    last = max(ends.values())
    if as_of.normalize() > last:
        per_ticker = "" if len(ends) == 1 else " (" + ", ".join(f"{s} {d:%Y-%m-%d}" for s, d in sorted(ends.items())) + ")"
        tickers = ", ".join(sorted(ends))
        raise BeyondDataError(
            f"{as_of:%Y-%m-%d} is after the last trading day in the data for {tickers}: {last:%Y-%m-%d}{per_ticker}. "
            f"Nothing was computed or stored; pick {last:%Y-%m-%d} or earlier (or refresh prices for newer days).")
    return as_of


def as_of_bounds(model_id: str, window_days: int, db: sqlite_utils.Database | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(first, last) day a check of `model_id` can be made for: first = the `window_days`-th trading day
    after its training window (a full current window; the last day if the data has fewer), last = the
    last trading day of its ticker's data. The Drift page bounds its date picker with these."""
    db = db or get_db()
    model = get_model(model_id, db=db)
    train_end = pd.Timestamp(model["train_end"])
    days = load_prices(model["symbol"], start=train_end, db=db).index
    after = days[days > train_end]
    last = days[-1]
    first = after[min(max(int(window_days), MIN_SAMPLES), len(after)) - 1] if len(after) else last
    return first, last


def default_as_of(model_id: str, db: sqlite_utils.Database | None = None) -> pd.Timestamp:
    """Where the live system stands for this model: its last logged prediction, else the last trading day."""
    db = db or get_db()
    row = db.execute("SELECT MAX(as_of) FROM predictions WHERE model_id = ?", [model_id]).fetchone()
    if row and row[0]:
        return pd.Timestamp(row[0])
    return load_prices(get_model(model_id, db=db)["symbol"], db=db).index[-1]


def _model_errors(model_id: str, as_of, db: sqlite_utils.Database) -> pd.DataFrame:
    """Served predictions up to `as_of` with known actuals, with log-return errors (scale-free)."""
    # shadow predictions count too: they are this model's forecasts, only not shown to the user
    log_frame = prediction_log(model_id=model_id, end=as_of, served_only=False, db=db).dropna(subset=["actual_close"])
    log_frame = log_frame[log_frame["target_date"] <= _day(as_of)]
    out = pd.DataFrame({
        "as_of": log_frame["as_of"].to_numpy(),
        "pred_return": np.log(log_frame["predicted_close"] / log_frame["last_close"]).to_numpy(),
        "actual_return": np.log(log_frame["actual_close"] / log_frame["last_close"]).to_numpy(),
        "abs_error": log_frame["abs_error"].to_numpy(),
        "naive_abs_error": log_frame["naive_abs_error"].to_numpy(),
        "ape": (log_frame["abs_error"] / log_frame["actual_close"]).to_numpy(),
    })
    out["error"] = out["pred_return"] - out["actual_return"]
    return out


def performance_check(recent: pd.DataFrame, validation: pd.DataFrame, settings: Settings) -> dict:
    """Recent MAE vs validation MAE. The decision uses the scale-free MAPE ratio, because $ errors grow
    with the price level: a stock that doubled since validation would show "+100%" in $ with the same skill."""
    validation_mae = float(np.mean(np.abs(validation["predicted_close"] - validation["actual_close"])))
    validation_mape = float(np.mean(np.abs(validation["predicted_close"] - validation["actual_close"]) / validation["actual_close"]) * 100)
    result = {"n": int(len(recent)), "validation_mae": validation_mae, "validation_mape": validation_mape,
              "recent_mae": None, "recent_mape": None, "recent_naive_mae": None, "recent_skill": None,
              "change_pct": None, "degraded": False, "threshold_pct": settings.drift_perf_threshold * 100,
              "note": ""}
    if len(recent) < MIN_PERF_SAMPLES:
        result["note"] = f"{len(recent)} prediction(s) with actuals in the window; {MIN_PERF_SAMPLES} needed to judge performance"
        return result
    recent_mae, naive_mae = float(recent["abs_error"].mean()), float(recent["naive_abs_error"].mean())
    recent_mape = float(recent["ape"].mean() * 100)
    change = (recent_mape / validation_mape - 1) * 100 if validation_mape > 0 else float("nan")
    result.update(recent_mae=recent_mae, recent_mape=recent_mape, recent_naive_mae=naive_mae,
                  recent_skill=1 - recent_mae / naive_mae if naive_mae > 0 else None, change_pct=change,
                  degraded=bool(np.isfinite(change) and change > settings.drift_perf_threshold * 100))
    return result


def concept_check(reference_returns: np.ndarray, current_returns: np.ndarray, recent: pd.DataFrame,
                  validation: pd.DataFrame, settings: Settings) -> dict:
    """Did the market or the model's relation to it change? Volatility (Brown-Forsythe / Levene with
    median centring), the return distribution (KS), and the bias of the errors (Welch t-test)."""
    alpha = settings.drift_ks_alpha
    volatility = volatility_check(reference_returns, current_returns, alpha)
    ret_ks, ret_p = ks_test(reference_returns, current_returns)
    bias_validation = float((validation["pred_return"] - validation["actual_return"]).mean())
    bias_recent, bias_p = None, None
    if len(recent) >= MIN_PERF_SAMPLES:
        bias_recent = float(recent["error"].mean())
        bias_p = float(stats.ttest_ind(recent["error"], validation["pred_return"] - validation["actual_return"],
                                       equal_var=False).pvalue)
    vol_drift = volatility["volatility_drift"]
    bias_drift = bool(bias_p is not None and bias_p < alpha)
    return {**volatility, "returns_ks_stat": ret_ks, "returns_p_value": ret_p,
            "error_bias_validation": bias_validation, "error_bias_recent": bias_recent, "bias_p_value": bias_p,
            "volatility_drift": vol_drift, "bias_drift": bias_drift, "drift": vol_drift or bias_drift}


def volatility_check(reference_returns: np.ndarray, current_returns: np.ndarray, alpha: float) -> dict:
    """Realised volatility change: ratio of standard deviations, Brown-Forsythe (Levene, median) p-value;
    drift when significant at `alpha` and the ratio is beyond x1.5 either way."""
    vol_ref, vol_cur = float(np.std(reference_returns, ddof=1)), float(np.std(current_returns, ddof=1))
    vol_ratio = vol_cur / vol_ref if vol_ref > 0 else float("nan")
    vol_p = float(stats.levene(reference_returns, current_returns, center="median").pvalue)
    drifted = bool(vol_p < alpha and (vol_ratio >= VOL_RATIO_LIMIT or vol_ratio <= 1 / VOL_RATIO_LIMIT))
    return {"volatility_reference": vol_ref, "volatility_current": vol_cur, "volatility_ratio": vol_ratio,
            "volatility_p_value": vol_p, "volatility_drift": drifted}


def prediction_check(recent_predictions: np.ndarray, validation: pd.DataFrame, settings: Settings) -> dict:
    """The model's recent predicted returns vs its validation predictions (PSI and KS)."""
    if len(recent_predictions) < MIN_SAMPLES:
        return {"n": int(len(recent_predictions)), "psi": None, "ks_stat": None, "p_value": None, "drift": False,
                "note": f"{len(recent_predictions)} prediction(s) in the window; {MIN_SAMPLES} needed"}
    frame = compare_frames(pd.DataFrame({"pred_return": validation["pred_return"].to_numpy()}),
                           pd.DataFrame({"pred_return": recent_predictions}), settings=settings, serial=True)
    row = frame.features.iloc[0]
    return {"n": int(len(recent_predictions)), "psi": row["psi"], "ks_stat": row["ks_stat"], "p_value": row["p_value"],
            "psi_p_value": row["psi_p_value"],
            "drift": bool(row["verdict"] == "drift"), "note": ""}


def streaming_check(errors: pd.DataFrame, validation: pd.DataFrame, window_start: str) -> dict:
    """ADWIN and Page-Hinkley (river, default parameters) over the daily absolute log-return errors in units
    of the validation mean absolute error, so the same defaults mean the same thing for every ticker.
    Page-Hinkley watches increases only (mode="up"): a model whose error falls is not a problem."""
    from river.drift import ADWIN, PageHinkley

    scale = float(np.mean(np.abs(validation["pred_return"] - validation["actual_return"])))
    daily = errors.groupby("as_of")["error"].apply(lambda e: float(np.mean(np.abs(e))))
    stream = daily / scale if scale > 0 else daily
    adwin, page_hinkley = ADWIN(), PageHinkley(mode="up")
    adwin_days, ph_days = [], []
    for day, value in stream.items():  # river detectors consume one observation at a time
        adwin.update(value)
        page_hinkley.update(value)
        if adwin.drift_detected:
            adwin_days.append(day)
        if page_hinkley.drift_detected:
            ph_days.append(day)
    in_window = [d for d in adwin_days + ph_days if d >= window_start]
    return {"n": int(len(stream)), "scale": scale, "adwin": adwin_days, "page_hinkley": ph_days,
            "in_window": bool(in_window), "stream": {"date": list(stream.index), "value": stream.round(6).tolist()}}


def _severity(dataset_drift: bool, performance: dict, concept: dict, prediction: dict, streaming: dict,
              features: pd.DataFrame) -> str:
    """critical: inputs drifted AND the error rose; significant: either; moderate: a weaker signal."""
    degraded = performance["degraded"]
    if dataset_drift and degraded:
        return "critical"
    if dataset_drift or degraded:
        return "significant"
    weaker = (concept["drift"] or prediction["drift"] or streaming["in_window"]
              or bool((features["verdict"] == "drift").any()))
    return "moderate" if weaker else "none"


def _reasons(comparison: FrameComparison, performance: dict, concept: dict, prediction: dict,
             streaming: dict, settings: Settings) -> list[str]:
    reasons = []
    drifted = comparison.features[comparison.features["verdict"] == "drift"].sort_values("psi", ascending=False)
    if comparison.n_drifted:
        reasons.append(f"{comparison.n_drifted} of {comparison.n_features} features drifted "
                       f"({comparison.drifted_share:.0%}; dataset drift at >= {settings.drift_share_threshold:.0%})")
    for row in drifted.head(5).itertuples():
        if row.note:
            reasons.append(f"{row.feature}: {row.note}")
        elif row.out_of_range > 0:
            reasons.append(f"{row.out_of_range:.0%} of {row.feature} values far outside the training range "
                           "(beyond min/max widened by the range: a scale or units change?)")
        elif np.isfinite(row.psi) and np.isfinite(row.p_value):
            reasons.append(f"PSI {row.psi:.2f} on {row.feature} >= {settings.drift_psi_threshold:g} (KS p={row.p_value:.1e}, PSI p={row.psi_p_value:.3f})")
        elif row.new_categories:
            reasons.append(f"new categories in {row.feature}: {', '.join(map(str, row.new_categories[:5]))}")
        else:
            reasons.append(f"missing values in {row.feature} rose from {row.missing_ref:.0%} to {row.missing_cur:.0%}")
    if performance["degraded"]:
        reasons.append(f"MAE {performance['change_pct']:+.0f}% vs validation (MAPE {performance['recent_mape']:.2f}% vs "
                       f"{performance['validation_mape']:.2f}%; MAE ${performance['recent_mae']:.2f} vs ${performance['validation_mae']:.2f})")
    if concept["volatility_drift"]:
        reasons.append(f"volatility x{concept['volatility_ratio']:.2f} vs training (Levene p={concept['volatility_p_value']:.1e})")
    if concept["bias_drift"]:
        reasons.append(f"error bias shifted to {concept['error_bias_recent']:+.4f} from {concept['error_bias_validation']:+.4f} "
                       f"log return (t-test p={concept['bias_p_value']:.1e})")
    if prediction["drift"]:
        reasons.append(f"predictions drifted vs validation (PSI {prediction['psi']:.2f}, KS p={prediction['p_value']:.1e})")
    if streaming["in_window"]:
        days = sorted(set(streaming["adwin"] + streaming["page_hinkley"]))
        reasons.append(f"error stream change detected (ADWIN / Page-Hinkley) on {', '.join(days[-3:])}")
    return reasons


def check_model(model_id: str, as_of=None, window_days: int | None = None,
                db: sqlite_utils.Database | None = None, store: bool = True) -> DriftReport:
    """Every drift check for `model_id` on `as_of` (default: where its prediction log stands).

    Reference = the model's training window features; current = the last `window_days` trading days
    up to `as_of`. Stores the report in `drift_checks` when `store`.
    """
    db = db or get_db()
    settings = get_settings()
    window_days = int(window_days or settings.drift_window_days)
    model = get_model(model_id, db=db)
    as_of = pd.Timestamp(as_of) if as_of is not None else default_as_of(model_id, db=db)
    check_within_data(as_of, data_ends([model["symbol"]], db=db))
    try:
        reference, current = model_windows(model, as_of, window_days, db)
    except MarketDataError as exc:
        raise DriftInputError(f"{model_id}: {exc}") from exc
    comparison = compare_frames(reference, current, settings=settings, serial=True)
    validation = validation_predictions(model_id)
    errors = _model_errors(model_id, as_of, db)
    window_start = _day(current.index[0])
    recent = errors[errors["as_of"] >= window_start]
    performance = performance_check(recent, validation, settings)
    prices = load_prices(model["symbol"], start=reference.index[0] - pd.Timedelta(days=7), end=as_of, db=db)["close"]
    returns = np.log(prices).diff()
    concept = concept_check(returns.loc[reference.index].dropna().to_numpy(), returns.loc[current.index].dropna().to_numpy(),
                            recent, validation, settings)
    prediction = prediction_check(recent["pred_return"].to_numpy(), validation, settings)
    streaming = streaming_check(errors, validation, window_start)
    severity = _severity(comparison.dataset_drift, performance, concept, prediction, streaming, comparison.features)
    reasons = _reasons(comparison, performance, concept, prediction, streaming, settings)
    sequential = drift_watch.alarms(model_id, as_of, db=db)  # hook (issue 13): the window says what, alarms when
    severity, reasons = drift_watch.combine(severity, reasons, sequential)
    features = comparison.features.sort_values("psi", ascending=False, na_position="last").reset_index(drop=True)
    report = DriftReport(
        model_id=model_id, as_of=_day(as_of), window_days=window_days,
        overall_drift=severity in ("significant", "critical"), severity=severity, reasons=reasons,
        features=features[FEATURE_TABLE_COLUMNS], performance=_clean(performance), concept=_clean(concept),
        prediction=_clean(prediction), streaming=_clean(streaming),
        dataset=_clean({"n_features": comparison.n_features, "n_drifted": comparison.n_drifted,
                        "drifted_share": comparison.drifted_share, "dataset_drift": comparison.dataset_drift,
                        "alpha_corrected": comparison.alpha_corrected, "rule": comparison.rule,
                        "reference_start": _day(reference.index[0]), "reference_end": _day(reference.index[-1]),
                        "current_start": window_start, "current_end": _day(current.index[-1])}),
        sequential=_clean(sequential), reference=reference, current=current,
    )
    if store:
        store_report(report, db=db)
    log.info("drift check %s as of %s: %s (%d reasons)", model_id, report.as_of, severity, len(reasons))
    return report


def should_retrain(report: DriftReport) -> tuple[bool, str]:
    """Retrain when the error rose past the threshold, or the inputs drifted (the model is extrapolating)
    unless live error shows it still does at least as well as in validation."""
    performance = report.performance
    if performance.get("degraded"):
        return True, "; ".join(report.reasons)
    trigger = drift_watch.retrain_trigger(report.sequential, performance.get("change_pct"))  # hook (issue 13)
    if trigger:
        return True, trigger
    if report.dataset.get("dataset_drift"):
        change = performance.get("change_pct")
        if change is not None and change <= 0:
            return False, (f"inputs drifted but live error is {change:+.0f}% vs validation: "
                           "monitor, no retraining needed yet")
        return True, "; ".join(report.reasons)
    if report.severity == "moderate":
        return False, "weak signals only (" + "; ".join(report.reasons) + "): monitor"
    return False, "no drift detected"


# --- storage -------------------------------------------------------------------------------------------

def store_report(report: DriftReport, db: sqlite_utils.Database | None = None) -> int:
    """Append the report to `drift_checks` (full JSON); returns the row id. A report dated after the
    last trading day of its ticker's data is refused (BeyondDataError): no check exists for such a day."""
    db = db or get_db()
    check_within_data(report.as_of, data_ends([get_model(report.model_id, db=db)["symbol"]], db=db))
    with transaction(db):
        table = db["drift_checks"]
        table.insert({"model_id": report.model_id, "as_of": report.as_of, "window_days": report.window_days,
                      "overall_drift": int(report.overall_drift), "severity": report.severity,
                      "reasons_json": to_json(report.reasons), "report_json": report.to_json(),
                      "created_at": utc_now()})
        return int(table.last_pk)


def drift_history(model_id: str, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Stored checks of `model_id`, oldest first: id, as_of, window_days, overall_drift, severity, reasons,
    drifted_share, created_at."""
    db = db or get_db()
    rows = list(db.query("SELECT id, as_of, window_days, overall_drift, severity, reasons_json, report_json, created_at "
                         "FROM drift_checks WHERE model_id = ? ORDER BY as_of, id", [model_id]))
    columns = ["id", "as_of", "window_days", "overall_drift", "severity", "reasons", "drifted_share", "created_at"]
    records = [{**{k: r[k] for k in ("id", "as_of", "window_days", "severity", "created_at")},
                "overall_drift": bool(r["overall_drift"]), "reasons": json.loads(r["reasons_json"] or "[]"),
                "drifted_share": json.loads(r["report_json"]).get("dataset", {}).get("drifted_share")} for r in rows]
    return pd.DataFrame(records, columns=columns)


def psi_history(model_id: str, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """PSI per feature (columns) per stored check (rows, indexed by as_of; the last check of a day wins)."""
    db = db or get_db()
    rows = db.query("SELECT as_of, report_json FROM drift_checks WHERE model_id = ? ORDER BY as_of, id", [model_id])
    series = {r["as_of"]: {f["feature"]: f["psi"] for f in json.loads(r["report_json"]).get("features", [])} for r in rows}
    return pd.DataFrame.from_dict(series, orient="index").astype(float).sort_index()


def latest_check(model_id: str, db: sqlite_utils.Database | None = None) -> dict | None:
    """The newest stored report of `model_id` (by as_of, then insertion) as a dict, or None."""
    db = db or get_db()
    row = db.execute("SELECT report_json FROM drift_checks WHERE model_id = ? ORDER BY as_of DESC, id DESC LIMIT 1",
                     [model_id]).fetchone()
    return json.loads(row[0]) if row else None
