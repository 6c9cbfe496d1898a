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
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils
from scipy import stats

from core.config import Settings, get_settings
from core.features import build_features
from core.market import MarketDataError, load_prices
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


# --- validation (the one place) --------------------------------------------------------------------

def check_frames(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric columns, other columns) of `reference`, after checking both frames can be compared.

    Raises DriftInputError when a frame is empty or too short, or `current` lacks a reference column.
    Extra columns in `current` are ignored; NaN and inf are treated as missing values.
    """
    for name, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise DriftInputError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}.")
        if frame.shape[1] == 0:
            raise DriftInputError(f"{name} has no columns: pass the feature frame.")
        if len(frame) < MIN_SAMPLES:
            raise DriftInputError(f"{name} has {len(frame)} row(s); at least {MIN_SAMPLES} are needed to compare distributions.")
    missing = [c for c in reference.columns if c not in current.columns]
    if missing:
        raise DriftInputError(f"current lacks the column(s) {', '.join(map(str, missing))} present in reference.")
    numeric = [c for c in reference.columns
               if pd.api.types.is_numeric_dtype(reference[c]) and pd.api.types.is_numeric_dtype(current[c])]
    other = [c for c in reference.columns if c not in numeric]
    return numeric, other


def _as_matrix(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Column-major float matrix (columns x rows): each column's values are contiguous for sorting."""
    return np.ascontiguousarray(frame[columns].to_numpy(dtype=float).T)


# --- vectorised statistics ---------------------------------------------------------------------------

def _order_keys(values: np.ndarray, tag: int) -> np.ndarray:
    """float64 -> int64 keys in the same order with the lowest bit replaced by `tag` (0 ref, 1 current).

    Sorting the keys of both samples together gives the joint order and, in the lowest bit, which
    sample each value came from, with one sort and no argsort. Values 1 ulp apart count as ties
    (relative error 1e-16). Non-finite values get the largest key: they sort last and are skipped.
    """
    keys = (values + 0.0).view(np.int64)  # a fresh copy; + 0.0 turns -0.0 into +0.0
    keys ^= (keys >> 63) & _FLIP  # negative floats: reverse the magnitude bits (branch-free)
    finite = np.isfinite(values)
    if not finite.all():
        keys[~finite] = _NONFINITE_KEY
    keys &= ~np.int64(1)
    keys |= np.int64(tag)
    return keys


def _key_values(keys: np.ndarray) -> np.ndarray:
    """Inverse of `_order_keys` (tag bit cleared): the float values, to within 1 ulp."""
    bits = keys & ~np.int64(1)
    bits ^= (bits >> 63) & _FLIP
    return bits.view(np.float64)


def _block_stats(ref: np.ndarray, cur: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """PSI, KS statistic and raw Wasserstein-1 for each row of `ref` (k x n) vs `cur` (k x m)."""
    k, n = ref.shape
    n_ref = np.isfinite(ref).sum(axis=1)
    n_cur = np.isfinite(cur).sum(axis=1)
    keys = np.concatenate([_order_keys(ref, 0), _order_keys(cur, 1)], axis=1)
    keys.sort(axis=1)
    is_cur = (keys & 1).astype(bool)
    cum_cur = np.cumsum(is_cur, axis=1, dtype=np.int64)
    position = np.arange(1, keys.shape[1] + 1, dtype=np.int64)
    # n_ref * n_cur * (F_ref - F_cur) after each value, in exact integers
    scaled_gap = (position - cum_cur) * n_cur[:, None]
    scaled_gap -= cum_cur * n_ref[:, None]
    np.abs(scaled_gap, out=scaled_gap)
    group = keys >> 1
    tie_inside = np.zeros_like(is_cur)
    tie_inside[:, :-1] = group[:, 1:] == group[:, :-1]  # evaluate only after the last of equal values
    scaled_gap[tie_inside] = 0
    values = _key_values(keys)
    finite = position <= (n_ref + n_cur)[:, None]
    all_finite = bool(finite.all())
    if not all_finite:
        scaled_gap[~finite] = 0
    denominator = np.maximum(n_ref * n_cur, 1).astype(float)
    ks_stat = scaled_gap.max(axis=1) / denominator
    step = np.diff(values, axis=1)
    if not all_finite:
        step[~finite[:, 1:]] = 0.0
    wasserstein = np.einsum("ij,ij->i", scaled_gap[:, :-1].astype(float), step) / denominator

    # PSI: deciles of the reference (np.quantile's linear rule), the same edges for both samples
    ref_sorted = values[~is_cur].reshape(k, n)
    cur_values = values[is_cur].reshape(k, -1)
    quantile_pos = np.arange(1, bins) / bins * (np.maximum(n_ref, 1) - 1)[:, None]
    lo, frac = np.floor(quantile_pos).astype(np.int64), quantile_pos % 1.0
    low = np.take_along_axis(ref_sorted, lo, axis=1)
    high = np.take_along_axis(ref_sorted, np.minimum(lo + 1, n - 1), axis=1)
    edges = np.where(frac > 0, low + (high - low) * frac, low)
    below_ref = np.column_stack([(ref_sorted < edges[:, [b]]).sum(axis=1) for b in range(bins - 1)])
    below_cur = np.column_stack([(cur_values < edges[:, [b]]).sum(axis=1) for b in range(bins - 1)])
    safe_ref, safe_cur = np.maximum(n_ref, 1)[:, None], np.maximum(n_cur, 1)[:, None]
    expected = np.diff(np.column_stack([np.zeros(k), below_ref, n_ref]), axis=1) / safe_ref
    actual = np.diff(np.column_stack([np.zeros(k), below_cur, n_cur]), axis=1) / safe_cur
    expected, actual = np.maximum(expected, PSI_EPSILON), np.maximum(actual, PSI_EPSILON)
    psi_values = ((actual - expected) * np.log(actual / expected)).sum(axis=1)
    return {"psi": psi_values, "ks_stat": ks_stat, "wasserstein_raw": wasserstein, "n_ref": n_ref, "n_cur": n_cur}


def column_stats(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """PSI, KS (statistic, p-value) and Wasserstein / reference std for each row of two column-major matrices.

    One sort per block of columns serves all three statistics. KS p-values follow scipy's own 'auto'
    rule: exact (scipy, per column) when both samples have <= 10,000 values, else the asymptotic
    Smirnov distribution `kstwo.sf(D, round(n*m/(n+m)))`, vectorised, as scipy computes it.
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
    p_value[large] = stats.kstwo.sf(out["ks_stat"].to_numpy()[large], np.maximum(en[large], 1))
    usable = (n_ref >= MIN_SAMPLES) & (n_cur >= MIN_SAMPLES)
    for j in np.flatnonzero(~large & usable):  # small samples only: scipy's exact p-value
        r, c = ref[j][np.isfinite(ref[j])], cur[j][np.isfinite(cur[j])]
        p_value[j] = stats.ks_2samp(r, c).pvalue
    out["p_value"] = np.clip(p_value, 0.0, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.nanstd(np.where(np.isfinite(ref), ref, np.nan), axis=1) if ref.size else np.array([])
    out["wasserstein"] = np.where(std > 0, out["wasserstein_raw"] / np.where(std > 0, std, 1.0), out["wasserstein_raw"])
    out.loc[~usable, ["psi", "ks_stat", "p_value", "wasserstein", "wasserstein_raw"]] = np.nan
    return out


def _vector(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if np.isfinite(array).sum() < MIN_SAMPLES:
        raise DriftInputError(f"{name} has {int(np.isfinite(array).sum())} finite value(s); at least {MIN_SAMPLES} are needed.")
    return array


def psi(reference: Any, current: Any, bins: int = 10) -> float:
    """Population Stability Index of `current` against `reference` (unitless, >= 0).

    Bins are the reference deciles ([e_i, e_i+1), outer bins open to +-inf), the same edges for the
    current sample, empty bins floored at 1e-4; PSI = sum((a - e) * ln(a / e)). Bands (industry
    convention, DESIGN.md): < 0.1 none, 0.1-0.25 moderate, >= 0.25 significant.
    A constant reference puts everything in one bin: PSI is 0 if current equals it, large otherwise.

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
            "new_categories": sorted(set(cur_counts.index) - set(ref_counts.index))}


def compare_frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    bins: int = 10,
    settings: Settings | None = None,
) -> FrameComparison:
    """Compare every column of `current` with `reference`; pure (no storage, no clock).

    Per feature: psi, ks_stat, p_value, wasserstein (/ reference std), missing rates, new categories
    and a verdict: "drift" when PSI >= drift_psi_threshold and the KS p-value < drift_ks_alpha / k
    (Bonferroni over the k features), or the missing rate rose by >= 10 points, or a new category
    appeared; "moderate" when PSI >= drift_psi_moderate and p < drift_ks_alpha; else "none".
    Dataset drift: at least drift_share_threshold of the features drift (see the module docstring).
    """
    settings = settings or get_settings()
    numeric, other = check_frames(reference, current)
    k = len(numeric) + len(other)
    alpha_corrected = settings.drift_ks_alpha / k
    ref_matrix, cur_matrix = _as_matrix(reference, numeric), _as_matrix(current, numeric)
    table = column_stats(ref_matrix, cur_matrix, bins) if numeric else pd.DataFrame()
    rows = []
    for i, name in enumerate(numeric):
        rows.append({"feature": name, **{c: float(table[c].iloc[i]) for c in ("psi", "ks_stat", "p_value", "wasserstein")},
                     "new_categories": []})
    rows += [{"feature": name, **_categorical_row(reference[name], current[name])} for name in other]
    features = pd.DataFrame(rows, columns=["feature", "psi", "ks_stat", "p_value", "wasserstein", "new_categories"])
    features["missing_ref"] = np.concatenate([1 - table["n_ref"].to_numpy() / len(reference) if numeric else [],
                                              reference[other].isna().mean().to_numpy()])
    features["missing_cur"] = np.concatenate([1 - table["n_cur"].to_numpy() / len(current) if numeric else [],
                                              current[other].isna().mean().to_numpy()])
    features["verdict"] = _verdicts(features, settings, alpha_corrected)
    n_drifted = int((features["verdict"] == "drift").sum())
    share = n_drifted / k
    rule = (f"feature drifts: PSI >= {settings.drift_psi_threshold:g} and KS p < {alpha_corrected:.2g} "
            f"({settings.drift_ks_alpha:g} / {k}); dataset drifts: >= {settings.drift_share_threshold:.0%} of features")
    return FrameComparison(features=features, n_features=k, n_drifted=n_drifted, drifted_share=share,
                           dataset_drift=share >= settings.drift_share_threshold, alpha_corrected=alpha_corrected, rule=rule)


def _verdicts(features: pd.DataFrame, settings: Settings, alpha_corrected: float) -> np.ndarray:
    psi_values, p = features["psi"].to_numpy(dtype=float), features["p_value"].to_numpy(dtype=float)
    categorical = features["ks_stat"].isna().to_numpy() & np.isfinite(psi_values)
    significant = np.where(categorical, True, p < alpha_corrected)
    missing_jump = (features["missing_cur"] - features["missing_ref"]).to_numpy() >= MISSING_RATE_JUMP
    new_categories = features["new_categories"].map(bool).to_numpy()
    drift = ((psi_values >= settings.drift_psi_threshold) & significant) | missing_jump | new_categories
    moderate = (psi_values >= settings.drift_psi_moderate) & np.where(categorical, True, p < settings.drift_ks_alpha)
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
    reference: pd.DataFrame | None = field(default=None, repr=False)
    current: pd.DataFrame | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        features = self.features.astype(object).where(self.features.notna(), None)
        return {
            "model_id": self.model_id, "as_of": self.as_of, "window_days": int(self.window_days),
            "overall_drift": bool(self.overall_drift), "severity": self.severity, "reasons": list(self.reasons),
            "features": features.to_dict("records"), "performance": self.performance, "concept": self.concept,
            "prediction": self.prediction, "streaming": self.streaming, "dataset": self.dataset,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DriftReport":
        features = pd.DataFrame(data.get("features") or [], columns=FEATURE_TABLE_COLUMNS)
        for column in ("psi", "ks_stat", "p_value", "wasserstein", "missing_ref", "missing_cur"):
            features[column] = pd.to_numeric(features[column], errors="coerce")
        return cls(
            model_id=data["model_id"], as_of=data["as_of"], window_days=int(data["window_days"]),
            overall_drift=bool(data["overall_drift"]), severity=data["severity"], reasons=list(data["reasons"]),
            features=features, performance=data.get("performance", {}), concept=data.get("concept", {}),
            prediction=data.get("prediction", {}), streaming=data.get("streaming", {}), dataset=data.get("dataset", {}),
        )

    def to_json(self) -> str:
        return to_json(self.to_dict())


FEATURE_TABLE_COLUMNS = ["feature", "psi", "ks_stat", "p_value", "wasserstein", "new_categories",
                         "missing_ref", "missing_cur", "verdict"]


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


def default_as_of(model_id: str, db: sqlite_utils.Database | None = None) -> pd.Timestamp:
    """Where the live system stands for this model: its last logged prediction, else the last trading day."""
    db = db or get_db()
    row = db.execute("SELECT MAX(as_of) FROM predictions WHERE model_id = ?", [model_id]).fetchone()
    if row and row[0]:
        return pd.Timestamp(row[0])
    return load_prices(get_model(model_id, db=db)["symbol"], db=db).index[-1]


def _model_errors(model_id: str, as_of, db: sqlite_utils.Database) -> pd.DataFrame:
    """Served predictions up to `as_of` with known actuals, with log-return errors (scale-free)."""
    log_frame = prediction_log(model_id=model_id, end=as_of, db=db).dropna(subset=["actual_close"])
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
    vol_ref, vol_cur = float(np.std(reference_returns, ddof=1)), float(np.std(current_returns, ddof=1))
    vol_ratio = vol_cur / vol_ref if vol_ref > 0 else float("nan")
    vol_p = float(stats.levene(reference_returns, current_returns, center="median").pvalue)
    ret_ks, ret_p = ks_test(reference_returns, current_returns)
    bias_validation = float((validation["pred_return"] - validation["actual_return"]).mean())
    bias_recent, bias_p = None, None
    if len(recent) >= MIN_PERF_SAMPLES:
        bias_recent = float(recent["error"].mean())
        bias_p = float(stats.ttest_ind(recent["error"], validation["pred_return"] - validation["actual_return"],
                                       equal_var=False).pvalue)
    vol_drift = bool(vol_p < alpha and (vol_ratio >= VOL_RATIO_LIMIT or vol_ratio <= 1 / VOL_RATIO_LIMIT))
    bias_drift = bool(bias_p is not None and bias_p < alpha)
    return {"volatility_reference": vol_ref, "volatility_current": vol_cur, "volatility_ratio": vol_ratio,
            "volatility_p_value": vol_p, "returns_ks_stat": ret_ks, "returns_p_value": ret_p,
            "error_bias_validation": bias_validation, "error_bias_recent": bias_recent, "bias_p_value": bias_p,
            "volatility_drift": vol_drift, "bias_drift": bias_drift, "drift": vol_drift or bias_drift}


def prediction_check(recent_predictions: np.ndarray, validation: pd.DataFrame, settings: Settings) -> dict:
    """The model's recent predicted returns vs its validation predictions (PSI and KS)."""
    if len(recent_predictions) < MIN_SAMPLES:
        return {"n": int(len(recent_predictions)), "psi": None, "ks_stat": None, "p_value": None, "drift": False,
                "note": f"{len(recent_predictions)} prediction(s) in the window; {MIN_SAMPLES} needed"}
    frame = compare_frames(pd.DataFrame({"pred_return": validation["pred_return"].to_numpy()}),
                           pd.DataFrame({"pred_return": recent_predictions}), settings=settings)
    row = frame.features.iloc[0]
    return {"n": int(len(recent_predictions)), "psi": row["psi"], "ks_stat": row["ks_stat"], "p_value": row["p_value"],
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
        if np.isfinite(row.psi) and np.isfinite(row.p_value):
            reasons.append(f"PSI {row.psi:.2f} on {row.feature} >= {settings.drift_psi_threshold:g} (KS p={row.p_value:.1e})")
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
    try:
        reference, current = model_windows(model, as_of, window_days, db)
    except MarketDataError as exc:
        raise DriftInputError(f"{model_id}: {exc}") from exc
    comparison = compare_frames(reference, current, settings=settings)
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
        reference=reference, current=current,
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
    """Append the report to `drift_checks` (full JSON); returns the row id."""
    db = db or get_db()
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
