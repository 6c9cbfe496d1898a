"""Drift statistics kernels: PSI, KS and Wasserstein for many columns in one vectorised pass (pure, no database).

`check_frames` is the one place that validates two frames before they are compared; `column_stats`
computes every column's PSI (reference deciles, empty bins floored at `PSI_EPSILON`), two-sample KS
statistic and p-value (scipy's exact routine up to `EXACT_KS_MAX_N`, asymptotic above) and
Wasserstein distance from one sort of the pooled values; `psi_null` is the PSI a calm window of the
same length would show. `psi`, `ks_test` and `wasserstein` are the one-column forms.
"""
from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd


@functools.cache
def _scipy_exact_ks() -> Callable | None:
    """scipy's exact two-sample KS p-value, the routine ks_2samp itself calls (see _exact_ks_p); None in a future
    scipy that moves it (the public ks_2samp is used then). Imported on first use: scipy.stats is ~2 s of a page's
    first visit that tests nothing (issue 16)."""
    try:
        from scipy.stats._stats_py import _attempt_exact_2kssamp
    except ImportError:  # pragma: no cover - a future scipy
        return None
    return _attempt_exact_2kssamp

MIN_SAMPLES = 5  # fewer finite values than this in either window: the column is "insufficient data"
PSI_EPSILON = 1e-4  # floor for empty bins (DESIGN.md), so ln(a / e) stays finite
EXACT_KS_MAX_N = 10_000  # scipy's own 'auto' rule: exact KS p-values up to this size, asymptotic above
COLUMN_BLOCK = 8  # columns processed together: bounds memory (a few arrays of block x rows) on wide frames
PARALLEL_MIN_VALUES = 20_000  # rows in both samples from which blocks of columns run in threads

_FLIP = np.int64(0x7FFFFFFFFFFFFFFF)
_NONFINITE_KEY = np.int64(0x7FFFFFFFFFFFFFFE)


class DriftInputError(ValueError):
    """Frames or a model that a drift check cannot use (missing columns, too few rows, no history)."""



# --- validation (the one place) --------------------------------------------------------------------

DATES_ADVICE = "convert to a number (e.g. days since start) or drop it"
_DATE_KINDS = {"datetime64", "datetime", "date", "timedelta64", "timedelta", "time", "period"}


def _kind(column: pd.Series) -> str:
    """"numeric", "categorical" (pandas `category` dtype: declared on purpose), "dates" (datetimes, dates,
    time spans, whether typed or in an object column) or "text" (anything else)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_datetime64_any_dtype(column.dtype) or pd.api.types.is_timedelta64_dtype(column.dtype) or \
            isinstance(column.dtype, pd.PeriodDtype):
        return "dates"
    if pd.api.types.is_bool_dtype(column.dtype) or pd.api.types.is_numeric_dtype(column.dtype):
        return "numeric"
    return "dates" if pd.api.types.infer_dtype(column, skipna=True) in _DATE_KINDS else "text"


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
        if "dates" in kinds:
            raise DriftInputError(
                f"column {column!r} holds dates/times ({reference[column].dtype} in reference, {current[column].dtype} in "
                f"current): {DATES_ADVICE}.")
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
            raise DriftInputError(f"column {column!r} has no finite value in the reference (all missing or infinite): "
                                  "there is nothing to compare against; drop the column or fix the reference data.")
        (numeric if kinds[0] == "numeric" else categorical).append(column)
    return numeric, categorical


def column_matrix(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
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
    from scipy import stats  # lazy: scipy.stats is ~2 s of a page's first visit (issue 16)
    exact = _scipy_exact_ks()
    if exact is None:
        return float(stats.ks_2samp(ref[np.isfinite(ref)], cur[np.isfinite(cur)]).pvalue)
    g = math.gcd(n1, n2)
    if n1 // g < np.iinfo(np.int32).max / (n2 // g):
        success, _, prob = exact(n1, n2, g, statistic, "two-sided")
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
    from scipy import stats  # lazy: scipy.stats is ~2 s of a page's first visit (issue 16)
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
    """`values` as a flat float array, or a DriftInputError naming the argument (`name`) and what to do."""
    raw = np.asarray(values) if not isinstance(values, (pd.Series, pd.Index)) else values.to_numpy()
    if raw.dtype.kind in "mM" or (raw.dtype == object and pd.api.types.infer_dtype(raw.ravel(), skipna=True) in _DATE_KINDS):
        raise DriftInputError(f"{name} holds dates/times: {DATES_ADVICE}.")
    try:
        array = np.asarray(raw, dtype=float).ravel()
    except (TypeError, ValueError):
        example = next((v for v in raw.ravel() if not _is_number(v)), None)
        example = example.item() if isinstance(example, np.generic) else example  # 'a', not np.str_('a')
        raise DriftInputError(f"{name} holds values that are not numbers (e.g. {example!r}): convert them with "
                              "pd.to_numeric, or compare categories with compare_frames.") from None
    if np.isfinite(array).sum() < MIN_SAMPLES:
        raise DriftInputError(f"{name} has {int(np.isfinite(array).sum())} finite value(s); at least {MIN_SAMPLES} are needed.")
    return array


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


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
    from scipy import stats  # lazy: scipy.stats is ~2 s of a page's first visit (issue 16)
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


