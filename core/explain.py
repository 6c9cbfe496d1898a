"""Explainability: exact SHAP values (cached), global and permutation importance, LIME; which artifact files exist.

SHAP values live in the model's output space: the next-day log return for a price model, the
log-odds of "up" for a direction model. For every row, base value + sum(contributions) == output.
XGBoost uses its booster's native exact TreeSHAP (`pred_contribs=True`, multithreaded C++), a random
forest `shap.TreeExplainer`. A direction model is a calibrated wrapper around several members (each
trained on a longer stretch of the window): its SHAP values explain the members' mean log-odds before
calibration (exact, SHAP is linear), i.e. the raw P(up) = sigmoid(output); the calibrated P(up) is
reported beside it. Results are cached per (model artifact, data window) in memory and as `.npz`
files in the model's folder. Registration also stores the explained window itself (`SHAP_WINDOW`), so
the page opens on stored numbers without computing (`stored_explanation`). The files written from
these values (importance, summary figure, model card) are `core.model_card`.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import threading
import weakref
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from core.config import get_settings
from core.features import TARGET, build_features, check_feature_frame, direction_labels
from core.market import MarketDataError, load_prices
from core.model_files import MODEL_CARD, model_folder
from core.registry import get_model, load_model
from core.training import MODEL_LABELS

log = logging.getLogger(__name__)

HISTORY_BUFFER_DAYS = 450  # calendar days loaded before a window so every feature (EWMs, SMA 50) is warm
MEMORY_CACHE_SIZE = 32
DISK_CACHE_FILES = 20  # per model; the oldest files beyond this are removed
PERMUTATION_REPEATS = 5
SUMMARY_MAX_ROWS = 750  # days drawn in the summary plots and shuffled for permutation importance (page stays < 3 s)
CARD_FILE, IMPORTANCE_JSON, IMPORTANCE_CSV = MODEL_CARD, "importance.json", "importance.csv"  # the card last
SUMMARY_PNG, SUMMARY_HTML = "shap_summary.png", "shap_summary.html"
DIRECTION = "direction"  # core.direction.DIRECTION, not imported from there: it loads scipy.stats (~1 s on a first visit)
SHAP_WINDOW = "shap_window.npz"  # the registered window's rows, SHAP values and dependence partners


class ExplainError(ValueError):
    """A model or data window that cannot be explained (naive model, empty window, wrong columns)."""


@dataclass(frozen=True)
class ShapValues:
    """SHAP contributions (rows x features) in the model's output space (log return, or log-odds of up), with the
    base value and the output."""

    values: np.ndarray
    base_value: float
    feature_names: list[str]
    output: np.ndarray  # the model's prediction per row: base_value + values.sum(axis=1)


@dataclass(frozen=True)
class Explanation:
    """SHAP values of one model over one window of trading days, with the rows they explain."""

    model_id: str
    model_type: str
    shap: ShapValues
    frame: pd.DataFrame  # FEATURE_COLUMNS + target (NaN where unknown) + close, indexed by date
    calibrated: np.ndarray | None = None  # direction models: the calibrated P(up) per row (what Forecast shows)
    partners: dict[str, str] | None = None  # stored dependence partners (feature -> feature), when registration kept them

    @property
    def X(self) -> pd.DataFrame:
        return self.frame[self.shap.feature_names]

    @property
    def is_direction(self) -> bool:
        return self.model_type == DIRECTION


# --- data ---------------------------------------------------------------------------------------------

def window_features(symbol: str, start=None, end=None, days: int | None = None,
                    db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Feature rows for the trading days in [start, end] (or the last `days` up to `end`).

    Prices are loaded from well before the window (so every rolling window and EWM is warm) and a few
    days past `end`, so the last day's `target` (the actual next-day return) is known when the data has it.
    """
    if start is None and days is None:
        raise ExplainError("window_features needs a start date or a number of days.")
    end_ts = pd.Timestamp(end) if end is not None else None
    first_needed = pd.Timestamp(start) if start is not None else None
    load_from = None
    if first_needed is not None:
        load_from = first_needed - pd.Timedelta(days=HISTORY_BUFFER_DAYS)
    elif end_ts is not None:
        load_from = end_ts - pd.Timedelta(days=int(days * 1.6) + HISTORY_BUFFER_DAYS)
    try:
        prices = load_prices(symbol, start=load_from, end=None if end_ts is None else end_ts + pd.Timedelta(days=10), db=db)
    except MarketDataError as exc:
        raise ExplainError(f"{symbol}: cannot explain {start or 'the start'} to {end or 'the end'}: {exc}") from exc
    frame = build_features(prices, symbol)
    if end_ts is not None:
        frame = frame.loc[frame.index <= end_ts]
    if first_needed is not None:
        frame = frame.loc[frame.index >= first_needed]
    elif days is not None:
        frame = frame.iloc[-days:]
    if frame.empty:
        raise ExplainError(f"{symbol}: no trading day with complete features between {start or 'the start'} and {end or 'the end'}.")
    return frame


def model_window(model: dict, days: int | None = None, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """The default explained window of a model: the last `days` rows it was trained on (all before train_end)."""
    days = days or get_settings().explain_window_days
    frame = window_features(model["symbol"], end=model["train_end"], days=days + 1, db=db)
    return frame.loc[frame.index < pd.Timestamp(model["train_end"])].iloc[-days:]


# --- SHAP values (cached) -----------------------------------------------------------------------------

_memory: OrderedDict[str, ShapValues] = OrderedDict()
_explainers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # fitted estimator -> its TreeExplainer
_lock = threading.Lock()


def _as_matrix(X: pd.DataFrame | np.ndarray, feature_names: list[str]) -> np.ndarray:
    if isinstance(X, pd.DataFrame):
        return check_feature_frame(X, feature_names)
    matrix = np.asarray(X, dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] != len(feature_names):
        raise ExplainError(f"Expected a 2D array with {len(feature_names)} feature columns, got shape {matrix.shape}.")
    if len(matrix) == 0 or not np.isfinite(matrix).all():
        raise ExplainError("The rows to explain are empty or hold NaN / infinite values.")
    return matrix


def _cache_key(row: dict, matrix: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(f"{row['model_id']}|{row['artifact_sha256']}|{'|'.join(row['features'])}|{matrix.shape}".encode())
    digest.update(np.ascontiguousarray(matrix, dtype=np.float64).tobytes())
    return digest.hexdigest()[:24]


def _cache_dir(model_id: str) -> Path:
    return model_folder(model_id) / "shap_cache"


def _member_log_odds_shap(estimator: Any, matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """(values, base) in log-odds of one fitted classifier: XGBoost's exact TreeSHAP of its margin, or, for the
    standardised logistic regression, coefficient x standardised value (exact; the base is the intercept, the
    log-odds at the training mean, as shap.LinearExplainer with that mean as background)."""
    if hasattr(estimator, "get_booster"):
        import xgboost as xgb

        contribs = estimator.get_booster().predict(xgb.DMatrix(matrix), pred_contribs=True)
        return contribs[:, :-1].astype(float), float(contribs[0, -1])
    scaler, logistic = estimator[0], estimator[-1]
    return scaler.transform(matrix) * logistic.coef_[0], float(logistic.intercept_[0])


def direction_shap(calibrated_model: Any, matrix: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(values, base, output) of a calibrated direction model in log-odds: the members' mean, before calibration.

    SHAP values add, so the mean of the members' exact values explains their mean log-odds exactly;
    sigmoid(output) is the raw (uncalibrated) P(up)."""
    parts = [_member_log_odds_shap(member.estimator, matrix) for member in calibrated_model.calibrated_classifiers_]
    values = np.mean([v for v, _ in parts], axis=0)
    base = float(np.mean([b for _, b in parts]))
    return values, base, base + values.sum(axis=1)


def _tree_shap(model_id: str, model_type: str, loaded: Any, matrix: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Exact SHAP (values, base value, model output): XGBoost's native pred_contribs, shap.TreeExplainer, or
    a direction model's members in log-odds (`direction_shap`)."""
    estimator = loaded.estimator
    if model_type == DIRECTION:
        return direction_shap(estimator, matrix)
    if model_type == "xgb":
        import xgboost as xgb

        contribs = estimator.get_booster().predict(xgb.DMatrix(matrix), pred_contribs=True)
        # the row sum (bias included) is the margin, i.e. the regression output: no second pass over the trees
        return contribs[:, :-1].astype(float), float(contribs[0, -1]), contribs.sum(axis=1, dtype=float)
    if model_type == "rf":
        import shap

        with _lock:
            explainer = _explainers.get(estimator)
            if explainer is None:
                explainer = _explainers[estimator] = shap.TreeExplainer(estimator)
        values = np.asarray(explainer.shap_values(matrix, check_additivity=False), dtype=float)
        return values, float(np.ravel(explainer.expected_value)[0]), loaded.predict_returns(matrix)
    raise ExplainError(f"{model_id} is a {MODEL_LABELS.get(model_type, model_type)} model: it has no features to explain.")


def shap_values(model_id: str, X: pd.DataFrame | np.ndarray, db: sqlite_utils.Database | None = None) -> ShapValues:
    """SHAP values of `model_id` for the rows of `X`, from memory, then disk, else computed and cached."""
    row = get_model(model_id, db=db)
    if row["model_type"] == "naive":
        raise ExplainError(f"{model_id} is the naive baseline (tomorrow = today): it uses no features, so there is nothing to explain.")
    names = list(row["features"])
    matrix = _as_matrix(X, names)
    key = _cache_key(row, matrix)
    with _lock:
        hit = _memory.get(key)
        if hit is not None:
            _memory.move_to_end(key)
            return hit
    path = _cache_dir(model_id) / f"{key}.npz"
    result = _read_cached(path, names)
    if result is None:
        loaded = load_model(model_id, db=db)
        values, base, output = _tree_shap(model_id, row["model_type"], loaded, matrix)
        result = ShapValues(values=values, base_value=base, feature_names=names, output=output)
        _write_cached(path, result)
    with _lock:
        _memory[key] = result
        while len(_memory) > MEMORY_CACHE_SIZE:
            _memory.popitem(last=False)
    return result


def _read_cached(path: Path, names: list[str]) -> ShapValues | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            return ShapValues(values=data["values"], base_value=float(data["base_value"]), feature_names=names,
                              output=data["output"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ignoring an unreadable SHAP cache file %s: %s", path, exc)
        return None


def _write_cached(path: Path, result: ShapValues) -> None:
    """Write to a temporary name and rename (readers never see half a file); no fsync: a lost cache is recomputed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, values=result.values, base_value=result.base_value, output=result.output)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        files = sorted((f for f in path.parent.glob("*.npz") if not f.name.startswith(".")), key=lambda f: f.stat().st_mtime)
        for old in files[:-DISK_CACHE_FILES]:
            old.unlink(missing_ok=True)
    except OSError as exc:  # a read-only models folder only costs a recomputation next time
        log.warning("could not cache SHAP values in %s: %s", path.parent, exc)


def clear_memory_cache() -> None:
    """Forget in-memory SHAP values (the disk cache stays); used by tests and the benchmark."""
    with _lock:
        _memory.clear()
        _explainers.clear()


def explain_window(model_id: str, start=None, end=None, days: int | None = None,
                   db: sqlite_utils.Database | None = None) -> Explanation:
    """SHAP values of `model_id` over its ticker's trading days in [start, end] (default: the model's window)."""
    row = get_model(model_id, db=db)
    if row["model_type"] == "naive":
        raise ExplainError(f"{model_id} is the naive baseline (tomorrow = today): it uses no features, so there is nothing to explain.")
    if start is None and days is None:
        frame = model_window(row, db=db)
    else:
        frame = window_features(row["symbol"], start=start, end=end, days=days, db=db)
    result = shap_values(model_id, frame, db=db)
    calibrated = None
    if row["model_type"] == DIRECTION:
        calibrated = load_model(model_id, db=db).estimator.predict_proba(check_feature_frame(frame, result.feature_names))[:, 1]
    return Explanation(model_id=model_id, model_type=row["model_type"], shap=result, frame=frame, calibrated=calibrated)


def summary_rows(explanation: Explanation, max_rows: int = SUMMARY_MAX_ROWS) -> tuple[np.ndarray, str | None]:
    """Row positions for the summary plots: all of them, or `max_rows` evenly spaced days over the whole
    window (deterministic, every season kept), and the sentence that says so (None when all are shown).

    The SHAP values of the rows shown are the exact ones of those days; only the number of points
    drawn (and shuffled for permutation importance) is capped, which keeps a 13-year window as quick
    as a 1-year one.

    >>> import numpy as np
    >>> np.linspace(0, 9, 4).round().astype(int).tolist()  # how the days are picked: ends included
    [0, 3, 6, 9]
    """
    n = len(explanation.frame)
    if n <= max_rows:
        return np.arange(n), None
    rows = np.unique(np.linspace(0, n - 1, max_rows).round().astype(int))
    return rows, (f"{len(rows):,} of the window's {n:,} trading days are drawn (evenly spaced over the whole range) and "
                  "used for permutation importance; each day shown has its exact SHAP values. Mean |SHAP| uses every day.")


# --- importance ---------------------------------------------------------------------------------------

def global_importance(result: ShapValues) -> pd.Series:
    """Mean |SHAP| per feature (log-return units), largest first."""
    return pd.Series(np.abs(result.values).mean(axis=0), index=result.feature_names, name="mean_abs_shap").sort_values(ascending=False)


@functools.cache
def _return_predictor_class() -> type:
    """`ReturnPredictor`, defined on first use: sklearn's base classes are a heavy import that only this needs."""
    from sklearn.base import BaseEstimator, RegressorMixin  # lazy: heavy

    class ReturnPredictor(RegressorMixin, BaseEstimator):
        """The fitted model behind sklearn's estimator interface, without the per-call overhead of the estimators'
        own `predict` (a forest's joblib dispatch, XGBoost's wrapper), which dominates permutation importance."""

        def __init__(self, loaded) -> None:
            self.loaded = loaded
            self.booster = None
            if loaded.model_type == "xgb":  # a private single-threaded copy: ~100 small predictions, where OpenMP's
                self.booster = loaded.estimator.get_booster().copy()  # thread start-up costs 30x the work on busy cores
                self.booster.set_param({"nthread": 1})

        def fit(self, X, y) -> "ReturnPredictor":
            return self

        def predict(self, X) -> np.ndarray:
            matrix = np.asarray(X, dtype=float)
            if self.booster is not None:
                return np.asarray(self.booster.inplace_predict(matrix), dtype=float)
            return self.loaded.predict_returns(matrix)

    return ReturnPredictor


def permutation_importance_frame(model_id: str, frame: pd.DataFrame, n_repeats: int = PERMUTATION_REPEATS,
                                 db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """sklearn permutation importance on `frame` (rows with a known target): the rise in MAE (log return) of a
    price model, the rise in log loss of a direction model's calibrated P(up)."""
    from sklearn.inspection import permutation_importance

    loaded = load_model(model_id, db=db)
    if loaded.model_type == "naive":
        raise ExplainError(f"{model_id} is the naive baseline: permuting features cannot change its output.")
    rows = frame.loc[frame[TARGET].notna()]
    if len(rows) < 20:
        raise ExplainError(f"Permutation importance needs at least 20 days with a known next-day return, got {len(rows)}.")
    X = check_feature_frame(rows, loaded.feature_columns)
    if loaded.model_type == DIRECTION:
        y = direction_labels(rows)
        if len(np.unique(y)) < 2:
            raise ExplainError("Permutation importance of a direction model needs days that went up and days that went down.")
        estimator, target, scoring = loaded.estimator, y, "neg_log_loss"
    else:
        estimator, target, scoring = _return_predictor_class()(loaded), rows[TARGET].to_numpy(), "neg_mean_absolute_error"
    result = permutation_importance(estimator, X, target, scoring=scoring, n_repeats=n_repeats, random_state=0, n_jobs=1)
    table = pd.DataFrame({"feature": loaded.feature_columns, "permutation_mean": result.importances_mean,
                          "permutation_std": result.importances_std})
    return table.sort_values("permutation_mean", ascending=False, ignore_index=True)


def window_permutation(model_id: str, explanation: Explanation) -> tuple[pd.DataFrame | None, str | None]:
    """(permutation importance indexed by feature, None) on the window's capped rows (a long range costs what a short
    one does), or (None, why not) when it cannot be computed there."""
    try:
        rows, _ = summary_rows(explanation)
        return permutation_importance_frame(model_id, explanation.frame.iloc[rows]).set_index("feature"), None
    except ExplainError as exc:
        return None, str(exc)


def interaction_partner(result: ShapValues, X: pd.DataFrame, feature: str) -> str:
    """The feature that seems to interact most with `feature` (shap's binned-correlation heuristic)."""
    import shap

    index = result.feature_names.index(feature)
    order = shap.utils.approximate_interactions(index, result.values, X[result.feature_names].to_numpy(dtype=float))
    return next(result.feature_names[i] for i in order if i != index)


def dependence_partner(explanation: Explanation, feature: str) -> str:
    """The partner stored with the registered window (no shap import), else `interaction_partner` on these rows."""
    if explanation.partners and feature in explanation.partners:
        return explanation.partners[feature]
    return interaction_partner(explanation.shap, explanation.X, feature)


def compare_importance(first: ShapValues, second: ShapValues, labels: tuple[str, str]) -> pd.DataFrame:
    """Mean |SHAP| of two models side by side, with each feature's rank in both (what changed after a retrain)."""
    a, b = global_importance(first), global_importance(second)
    table = pd.DataFrame({labels[0]: a, labels[1]: b}).fillna(0.0)
    table[f"rank {labels[0]}"] = table[labels[0]].rank(ascending=False, method="min").astype(int)
    table[f"rank {labels[1]}"] = table[labels[1]].rank(ascending=False, method="min").astype(int)
    table["rank change"] = table[f"rank {labels[0]}"] - table[f"rank {labels[1]}"]
    return table.sort_values(labels[1], ascending=False).rename_axis("feature").reset_index()


def artifact_files(model_id: str) -> dict[str, Path]:
    """The artifacts that exist for `model_id` (for download buttons): name -> path."""
    folder = model_folder(model_id)
    names = {"model_card": CARD_FILE, "importance_json": IMPORTANCE_JSON, "importance_csv": IMPORTANCE_CSV,
             "summary_png": SUMMARY_PNG, "summary_html": SUMMARY_HTML}  # SHAP_WINDOW is the page's, not a download
    return {key: folder / name for key, name in names.items() if (folder / name).exists()}
