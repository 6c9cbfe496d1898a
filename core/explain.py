"""Explainability: exact TreeSHAP values (cached), global and permutation importance, LIME, and each model's artifacts.

SHAP values live in the model's output space, the next-day log return: for every row,
base value + sum(contributions) == prediction. XGBoost uses its booster's native exact TreeSHAP
(`pred_contribs=True`, multithreaded C++), a random forest `shap.TreeExplainer`. Results are cached
per (model artifact, data window) in memory and as `.npz` files in the model's folder, so a page
reload or a second call does not recompute. `write_model_artifacts(model_id)` writes the importance
files, the summary figure and the model card under `models/<model_id>/`; the registry calls it after
each registration and it can be called again at any time (e.g. after certification).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils
from sklearn.base import BaseEstimator, RegressorMixin

from core.charts import shap_beeswarm_figure
from core.config import get_settings
from core.figure_export import RenderUnavailable, render_png
from core.features import TARGET, build_features, check_feature_frame
from core.market import MarketDataError, load_prices
from core.registry import MODEL_CARD, atomic_write, get_model, load_model, model_folder
from core.store import get_db, utc_now
from core.training import MODEL_LABELS

log = logging.getLogger(__name__)

HISTORY_BUFFER_DAYS = 450  # calendar days loaded before a window so every feature (EWMs, SMA 50) is warm
MEMORY_CACHE_SIZE = 32
DISK_CACHE_FILES = 20  # per model; the oldest files beyond this are removed
PERMUTATION_REPEATS = 5
SUMMARY_MAX_ROWS = 750  # days drawn in the summary plots and shuffled for permutation importance (page stays < 3 s)
CARD_FILE, IMPORTANCE_JSON, IMPORTANCE_CSV = MODEL_CARD, "importance.json", "importance.csv"  # the card last
SUMMARY_PNG, SUMMARY_HTML = "shap_summary.png", "shap_summary.html"


class ExplainError(ValueError):
    """A model or data window that cannot be explained (naive model, empty window, wrong columns)."""


@dataclass(frozen=True)
class ShapValues:
    """SHAP contributions (rows x features) in log-return space, with the base value and the model output."""

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

    @property
    def X(self) -> pd.DataFrame:
        return self.frame[self.shap.feature_names]


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


def _tree_shap(model_id: str, model_type: str, loaded: Any, matrix: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Exact TreeSHAP (values, base value, model output): XGBoost's native pred_contribs, or shap.TreeExplainer."""
    estimator = loaded.estimator
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
    except (OSError, ValueError, KeyError) as exc:
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
    return Explanation(model_id=model_id, model_type=row["model_type"], shap=shap_values(model_id, frame, db=db),
                       frame=frame)


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


class _ReturnPredictor(RegressorMixin, BaseEstimator):
    """The fitted model behind sklearn's estimator interface, without the per-call overhead of the estimators'
    own `predict` (a forest's joblib dispatch, XGBoost's wrapper), which dominates permutation importance."""

    def __init__(self, loaded) -> None:
        self.loaded = loaded
        self.booster = None
        if loaded.model_type == "xgb":  # a private single-threaded copy: ~100 small predictions, where OpenMP's
            self.booster = loaded.estimator.get_booster().copy()  # thread start-up costs 30x the work on busy cores
            self.booster.set_param({"nthread": 1})

    def fit(self, X, y) -> "_ReturnPredictor":
        return self

    def predict(self, X) -> np.ndarray:
        matrix = np.asarray(X, dtype=float)
        if self.booster is not None:
            return np.asarray(self.booster.inplace_predict(matrix), dtype=float)
        return self.loaded.predict_returns(matrix)


def permutation_importance_frame(model_id: str, frame: pd.DataFrame, n_repeats: int = PERMUTATION_REPEATS,
                                 db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """sklearn permutation importance on `frame` (rows with a known target): the rise in MAE (log return)."""
    from sklearn.inspection import permutation_importance

    loaded = load_model(model_id, db=db)
    if loaded.model_type == "naive":
        raise ExplainError(f"{model_id} is the naive baseline: permuting features cannot change its output.")
    rows = frame.loc[frame[TARGET].notna()]
    if len(rows) < 20:
        raise ExplainError(f"Permutation importance needs at least 20 days with a known next-day return, got {len(rows)}.")
    result = permutation_importance(
        _ReturnPredictor(loaded), check_feature_frame(rows, loaded.feature_columns), rows[TARGET].to_numpy(),
        scoring="neg_mean_absolute_error", n_repeats=n_repeats, random_state=0, n_jobs=1,
    )
    table = pd.DataFrame({"feature": loaded.feature_columns, "permutation_mean": result.importances_mean,
                          "permutation_std": result.importances_std})
    return table.sort_values("permutation_mean", ascending=False, ignore_index=True)


def interaction_partner(result: ShapValues, X: pd.DataFrame, feature: str) -> str:
    """The feature that seems to interact most with `feature` (shap's binned-correlation heuristic)."""
    import shap

    index = result.feature_names.index(feature)
    order = shap.utils.approximate_interactions(index, result.values, X[result.feature_names].to_numpy(dtype=float))
    return next(result.feature_names[i] for i in order if i != index)


def compare_importance(first: ShapValues, second: ShapValues, labels: tuple[str, str]) -> pd.DataFrame:
    """Mean |SHAP| of two models side by side, with each feature's rank in both (what changed after a retrain)."""
    a, b = global_importance(first), global_importance(second)
    table = pd.DataFrame({labels[0]: a, labels[1]: b}).fillna(0.0)
    table[f"rank {labels[0]}"] = table[labels[0]].rank(ascending=False, method="min").astype(int)
    table[f"rank {labels[1]}"] = table[labels[1]].rank(ascending=False, method="min").astype(int)
    table["rank change"] = table[f"rank {labels[0]}"] - table[f"rank {labels[1]}"]
    return table.sort_values(labels[1], ascending=False).rename_axis("feature").reset_index()


# --- one prediction: waterfall and LIME ---------------------------------------------------------------

def waterfall_steps(explanation: Explanation, day, top: int = 10, units: str = "return") -> pd.DataFrame:
    """Steps from the base value to the prediction for one day: the `top` features by |SHAP|, the rest pooled.

    units="return": exact SHAP values (log return). units="price": the same steps in $, applied in
    order of |SHAP| as last_close * (exp(cumulative) - exp(previous cumulative)); the steps add up
    exactly to the predicted close, but a step's $ size depends on that order (exp is not linear).
    """
    if units not in ("return", "price"):
        raise ExplainError(f"units must be 'return' or 'price', got {units!r}.")
    position = explanation.frame.index.get_indexer([pd.Timestamp(day)])[0]
    if position < 0:
        raise ExplainError(f"{pd.Timestamp(day).date()} is not a trading day of the explained window.")
    contributions = pd.Series(explanation.shap.values[position], index=explanation.shap.feature_names)
    order = contributions.abs().sort_values(ascending=False).index
    shown = contributions[order[:top]]
    rest = contributions[order[top:]]
    labels = [f"{name} = {explanation.frame[name].iloc[position]:.4g}" for name in shown.index]
    deltas = shown.to_numpy()
    if len(rest):
        labels.append(f"{len(rest)} other features")
        deltas = np.append(deltas, rest.sum())
    cumulative = explanation.shap.base_value + np.cumsum(deltas)
    if units == "price":
        last_close = float(explanation.frame["close"].iloc[position])
        levels = last_close * np.exp(np.concatenate([[explanation.shap.base_value], cumulative]))
        deltas, cumulative = np.diff(levels), levels[1:]
    return pd.DataFrame({"step": labels, "delta": deltas, "cumulative": cumulative})


def day_summary(explanation: Explanation, day) -> dict[str, Any]:
    """Base value, prediction and actual (if known) for one day, in log return and in $."""
    position = explanation.frame.index.get_indexer([pd.Timestamp(day)])[0]
    if position < 0:
        raise ExplainError(f"{pd.Timestamp(day).date()} is not a trading day of the explained window.")
    last_close = float(explanation.frame["close"].iloc[position])
    predicted = float(explanation.shap.output[position])
    actual = explanation.frame[TARGET].iloc[position]
    return {
        "day": explanation.frame.index[position], "last_close": last_close,
        "base_return": explanation.shap.base_value, "base_close": last_close * np.exp(explanation.shap.base_value),
        "predicted_return": predicted, "predicted_close": last_close * np.exp(predicted),
        "actual_return": None if pd.isna(actual) else float(actual),
        "actual_close": None if pd.isna(actual) else last_close * float(np.exp(actual)),
    }


def lime_explanation(model_id: str, explanation: Explanation, day, num_features: int = 10, num_samples: int = 2000,
                     db: sqlite_utils.Database | None = None) -> dict[str, Any]:
    """LIME (local linear surrogate, regression mode) for one day; training data = the model's training window."""
    from lime.lime_tabular import LimeTabularExplainer

    row = get_model(model_id, db=db)
    loaded = load_model(model_id, db=db)
    position = explanation.frame.index.get_indexer([pd.Timestamp(day)])[0]
    if position < 0:
        raise ExplainError(f"{pd.Timestamp(day).date()} is not a trading day of the explained window.")
    training = window_features(row["symbol"], start=row["train_start"], end=row["train_end"], db=db)
    explainer = LimeTabularExplainer(
        check_feature_frame(training, loaded.feature_columns), mode="regression",
        feature_names=loaded.feature_columns, discretize_continuous=True, random_state=0,
    )
    instance = explanation.X.iloc[position].to_numpy(dtype=float)
    result = explainer.explain_instance(instance, loaded.predict_returns, num_features=num_features,
                                        num_samples=num_samples)
    weights = pd.DataFrame(result.as_list(), columns=["condition", "weight"])
    intercept = result.intercept
    intercept = next(iter(intercept.values())) if isinstance(intercept, dict) else intercept
    return {"weights": weights, "intercept": float(intercept),
            "local_prediction": float(np.ravel(result.local_pred)[0]), "model_prediction": float(explanation.shap.output[position]),
            "score": float(result.score)}


# --- artifacts and model card -------------------------------------------------------------------------

def _write_png(fig, path: Path) -> None:
    """Render through kaleido, bounded in time (core.figure_export); raises RenderUnavailable."""
    image = render_png(fig)
    atomic_write(path, lambda tmp: tmp.write_bytes(image))


def _write_summary_figure(fig, folder: Path) -> tuple[str, str]:
    """(file name, note): a PNG through kaleido, or a self-contained HTML when asked or when kaleido fails."""
    note = ""
    if get_settings().explain_image_format == "png":
        try:
            _write_png(fig, folder / SUMMARY_PNG)
            (folder / SUMMARY_HTML).unlink(missing_ok=True)
            return SUMMARY_PNG, "static PNG rendered by kaleido (headless Chromium)"
        except RenderUnavailable as exc:  # no Chromium, kaleido failed or timed out: keep the figure, as HTML
            note = f"interactive HTML instead of PNG: {exc}"
            log.warning("summary figure of %s: %s", folder.name, note)
    else:
        note = "HTML because MLSA_EXPLAIN_IMAGE_FORMAT is not 'png'"
    atomic_write(folder / SUMMARY_HTML, lambda tmp: fig.write_html(str(tmp), include_plotlyjs=True, full_html=True))
    (folder / SUMMARY_PNG).unlink(missing_ok=True)
    return SUMMARY_HTML, note


def importance_table(explanation: Explanation, permutation: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| and permutation importance per feature, ranked by SHAP."""
    shap_part = global_importance(explanation.shap).rename_axis("feature").reset_index()
    shap_part["shap_rank"] = np.arange(1, len(shap_part) + 1)
    table = shap_part.merge(permutation, on="feature", how="left")
    table["permutation_rank"] = table["permutation_mean"].rank(ascending=False, method="min").astype(int)
    return table


def write_model_artifacts(model_id: str, db: sqlite_utils.Database | None = None, refresh: bool = False) -> dict[str, Path]:
    """Write importance (JSON + CSV), the summary figure and the model card into the model's folder.

    The card is always rebuilt from the registry's current row, so calling this again after a
    certification updates it. Importance and figure are reused when they were written for this very
    artifact and window size (a card-only rewrite takes milliseconds); `refresh=True` recomputes them.
    Returns name -> path of the files written or reused.
    """
    db = db or get_db()
    row = get_model(model_id, db=db)
    folder = model_folder(model_id)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if row["model_type"] == "naive":
        card = model_card_markdown(row, None, None, None)
    else:
        document = None if refresh else _reusable_importance(row, folder)
        if document is None:
            document = _write_importance(model_id, row, folder, db)
        importance = pd.DataFrame(document["features"])
        written.update({"importance_json": folder / IMPORTANCE_JSON, "importance_csv": folder / IMPORTANCE_CSV,
                        "summary_figure": folder / document["summary_figure"]})
        card = model_card_markdown(row, importance, document["window"], document["summary_figure"],
                                   document.get("summary_figure_note", ""))
    atomic_write(folder / CARD_FILE, lambda tmp: tmp.write_text(card))
    written["model_card"] = folder / CARD_FILE
    log.info("%s: explainability artifacts written (%s)", model_id, ", ".join(p.name for p in written.values()))
    return written


def _reusable_importance(row: dict, folder: Path) -> dict | None:
    """The stored importance document if it describes this artifact and the configured window, else None."""
    try:
        document = json.loads((folder / IMPORTANCE_JSON).read_text())
    except (OSError, ValueError):
        return None
    current = (document.get("artifact_sha256") == row["artifact_sha256"]
               and document.get("window", {}).get("days") == get_settings().explain_window_days
               and (folder / document.get("summary_figure", "-")).exists() and (folder / IMPORTANCE_CSV).exists())
    return document if current else None


def _write_importance(model_id: str, row: dict, folder: Path, db: sqlite_utils.Database) -> dict:
    """Compute SHAP + permutation importance on the model's window; write the JSON, CSV and summary figure."""
    explanation = explain_window(model_id, db=db)
    permutation = permutation_importance_frame(model_id, explanation.frame, db=db)
    importance = importance_table(explanation, permutation)
    window = {"start": f"{explanation.frame.index[0]:%Y-%m-%d}", "end": f"{explanation.frame.index[-1]:%Y-%m-%d}",
              "rows": len(explanation.frame), "days": get_settings().explain_window_days}
    figure = shap_beeswarm_figure(explanation.shap.values, explanation.X, explanation.shap.feature_names,
                                  title=f"SHAP summary: {model_id} ({window['start']} to {window['end']})")
    figure_name, figure_note = _write_summary_figure(figure, folder)
    document = {
        "model_id": model_id, "written_at": utc_now(), "artifact_sha256": row["artifact_sha256"],
        "units": "mean |SHAP| in next-day log return; permutation = rise in MAE (log return)",
        "window": window, "base_value": explanation.shap.base_value, "summary_figure": figure_name,
        "summary_figure_note": figure_note, "features": importance.to_dict("records"),
    }
    atomic_write(folder / IMPORTANCE_CSV, lambda tmp: importance.to_csv(tmp, index=False))
    atomic_write(folder / IMPORTANCE_JSON, lambda tmp: tmp.write_text(json.dumps(document, indent=2)))
    return document


def artifact_files(model_id: str) -> dict[str, Path]:
    """The artifacts that exist for `model_id` (for download buttons): name -> path."""
    folder = model_folder(model_id)
    names = {"model_card": CARD_FILE, "importance_json": IMPORTANCE_JSON, "importance_csv": IMPORTANCE_CSV,
             "summary_png": SUMMARY_PNG, "summary_html": SUMMARY_HTML}
    return {key: folder / name for key, name in names.items() if (folder / name).exists()}


def certification_status(row: dict) -> list[str]:
    """Markdown lines: the stored certification verdict and its checks, or "not computed" when none ran."""
    details = row["metrics"].get("certification")
    if not details:
        return ["Not computed: no certification has been run for this model."]
    certified = details.get("certified", bool(row.get("certified"))) if isinstance(details, dict) else bool(row.get("certified"))
    lines = [f"**{'Certified' if certified else 'Not certified'}**"
             + (f" (computed {str(details['computed_at'])[:16].replace('T', ' ')} UTC)" if details.get("computed_at") else "")]
    for check in details.get("checks", []) if isinstance(details, dict) else []:
        if isinstance(check, dict) and "label" in check:
            lines.append(f"- {'pass' if check.get('passed') else 'FAIL'}: {check['label']} = {_fmt(check.get('value'))} "
                         f"(target {check.get('comparison', '')} {_fmt(check.get('target'))})")
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " to ".join(_fmt(v) for v in value)
    return str(value)


def model_card_markdown(row: dict, importance: pd.DataFrame | None, window: dict | None, figure_name: str | None,
                        figure_note: str = "") -> str:
    """The model card (Markdown) from the registry row's stored metrics and the importance table."""
    m = row["metrics"]
    naive = m.get("naive", {})
    label = MODEL_LABELS.get(row["model_type"], row["model_type"])
    lines = [
        f"# Model card: {row['model_id']}", "",
        "## Purpose",
        f"Forecast the next trading day's close of **{row['symbol']}** as a next-day log return, converted to a price "
        f"(with a conformal interval). {label}, version {row['version']}, status **{row['status']}**, registered "
        f"{row['created_at'][:19].replace('T', ' ')} UTC ({row['reason']}). For decision support; not investment advice.", "",
        "## Data window",
        f"- Training: {row['train_start']} to {row['train_end']} ({m.get('data_source') or 'unknown source'})",
        f"- Walk-forward validation: {m.get('validation_start')} to {m.get('validation_end')} ({m.get('n')} days, "
        f"{len(m.get('fold_skill', []))} folds)",
    ]
    if window:
        lines.append(f"- Explained window (SHAP and permutation importance): {window['start']} to {window['end']} "
                     f"({window['rows']} days, the last days of the training window)")
    features = row["features"]
    lines += ["", "## Features", (f"{len(features)} features: " + ", ".join(f"`{f}`" for f in features)) if features
              else "None: the naive baseline predicts a zero log return (tomorrow's close = today's).", ""]
    lines += ["## Metrics vs naive (walk-forward validation)", "", "| metric | model | naive |", "|---|---|---|"]
    for key, name, fmt in (("mae", "MAE ($)", "{:.4f}"), ("rmse", "RMSE ($)", "{:.4f}"), ("mape", "MAPE (%)", "{:.3f}"),
                           ("directional_accuracy", "Directional accuracy (%)", "{:.1f}")):
        model_value, naive_value = m.get(key), naive.get(key)
        lines.append(f"| {name} | {fmt.format(model_value) if model_value is not None else 'n/a'} | "
                     f"{fmt.format(naive_value) if naive_value is not None else 'n/a'} |")
    if m.get("skill") is not None:
        lines += ["", f"Skill (1 - MAE/MAE_naive): **{m['skill']:+.4f}** ({'beats' if m['skill'] > 0 else 'does not beat'} naive); "
                  f"per fold: {', '.join(f'{s:+.3f}' for s in m.get('fold_skill', []))}."]
    if m.get("interval_coverage_nominal") is not None:
        lines.append(f"Interval coverage: {m['interval_coverage_empirical']:.0%} on the last fold vs "
                     f"{m['interval_coverage_nominal']:.0%} nominal.")
    lines += ["", "## Certification", *certification_status(row), ""]
    lines += ["## Known limitations",
              "- Daily returns are close to unpredictable; a skill near 0 means the model is about as good as naive.",
              "- Trained on one ticker's own price and volume history only: no news, fundamentals or other markets.",
              "- Trees cannot extrapolate: inputs outside the training range (new regimes) get edge-of-range predictions.",
              "- Validation metrics come from the walk-forward folds; live performance can differ (see drift monitoring).",
              "- Importance is computed on the last training days, which the final model has seen: it describes the model, "
              "not proof that a feature causes returns. Correlated features (returns, moving averages) share credit.", ""]
    lines.append("## Feature importance, top 10")
    if importance is None:
        lines.append("Not applicable: the naive baseline uses no features.")
    else:
        lines += ["", "| rank | feature | mean abs SHAP (log return) | permutation (MAE rise) |", "|---|---|---|---|"]
        for record in importance.head(10).to_dict("records"):
            lines.append(f"| {record['shap_rank']} | `{record['feature']}` | {record['mean_abs_shap']:.3e} | "
                         f"{record['permutation_mean']:.3e} ± {record['permutation_std']:.1e} |")
        lines += ["", f"Summary figure: `{figure_name}`" + (f" ({figure_note})" if figure_note else "")
                  + f"; full table: `{IMPORTANCE_CSV}`, `{IMPORTANCE_JSON}`."]
    return "\n".join(lines) + "\n"

