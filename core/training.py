"""Training: RandomForest, XGBoost and the naive baseline, walk-forward validation, $ metrics, conformal intervals.

Models forecast the next-day log return; metrics convert to prices ($) because that is what users
think in, and every model metric sits beside the naive baseline's ("tomorrow's close = today's") on
the same dates. `skill` = 1 - MAE_model / MAE_naive: positive means the model beats naive.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from core.config import Settings, get_settings
from core.features import FEATURE_COLUMNS, TARGET, WARMUP_DAYS, build_features, check_feature_frame, training_rows
from core.market import MarketDataError, load_prices

log = logging.getLogger(__name__)

MODEL_TYPES = ("naive", "rf", "xgb")
MODEL_LABELS = {"naive": "Naive (tomorrow = today)", "rf": "Random forest", "xgb": "XGBoost"}
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "naive": {},
    "rf": {"n_estimators": 200, "max_depth": 6, "min_samples_leaf": 20, "max_features": 0.5},
    "xgb": {"n_estimators": 300, "max_depth": 3, "learning_rate": 0.03, "subsample": 0.8,
            "colsample_bytree": 0.8, "min_child_weight": 5.0, "reg_lambda": 1.0},
}
Progress = Callable[[float, str], None]
XGB_THREADS = 1  # XGBoost fits: one thread unless a caller asks for more (see make_estimator)


class NaiveModel:
    """Predicts a zero log return: tomorrow's close equals today's."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> "NaiveModel":
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.zeros(len(X))


def make_estimator(model_type: str, params: dict[str, Any] | None = None, n_jobs: int | None = None):
    """A fresh, unfitted estimator of `model_type` with DEFAULT_PARAMS overridden by `params`.

    `n_jobs` defaults to `MLSA_TRAIN_THREADS` (2, one per core) for the random forest, whose joblib threads
    build whole trees and do not spin, and to `XGB_THREADS` (1) for XGBoost, as for the direction classifier:
    its OpenMP threads synchronise at every tree level and spin while they wait, so 2 threads on 2 cores
    shared with anything else (another training, the app) fit 13-19x SLOWER than 1 (bench/threads_bench.py).
    """
    if n_jobs is None:
        n_jobs = XGB_THREADS if model_type == "xgb" else get_settings().train_threads
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}.")
    merged = {**DEFAULT_PARAMS[model_type], **(params or {})}
    if model_type == "naive":
        return NaiveModel()
    if model_type == "rf":
        from sklearn.ensemble import RandomForestRegressor  # lazy: heavy (only training and loading need it)

        return RandomForestRegressor(random_state=0, n_jobs=n_jobs, **merged)
    from xgboost import XGBRegressor  # lazy: heavy

    return XGBRegressor(random_state=0, n_jobs=n_jobs, tree_method="hist", **merged)


# --- metrics ------------------------------------------------------------------------------------------

def price_metrics(last_close: np.ndarray, actual_close: np.ndarray, predicted_close: np.ndarray) -> dict[str, float]:
    """MAE and RMSE in $, MAPE in %, directional accuracy in % (predicted vs actual move from last close).

    Days where the prediction is exactly "no change" count as a miss for direction, so the naive
    model's directional accuracy is 0 by construction; `price_metrics_naive` reports the honest
    baseline for direction instead ("always up").
    """
    last_close, actual_close, predicted_close = (np.asarray(a, dtype=float) for a in (last_close, actual_close, predicted_close))
    if not (len(last_close) == len(actual_close) == len(predicted_close)) or len(actual_close) == 0:
        raise ValueError("price_metrics needs equally long, non-empty arrays.")
    error = predicted_close - actual_close
    direction_hit = np.sign(predicted_close - last_close) == np.sign(actual_close - last_close)
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(np.mean(np.abs(error) / actual_close) * 100),
        "directional_accuracy": float(np.mean(direction_hit) * 100),
        "n": int(len(actual_close)),
    }


def naive_metrics(last_close: np.ndarray, actual_close: np.ndarray) -> dict[str, float]:
    """The naive baseline on the same dates; direction baseline is "always up" (share of up days)."""
    metrics = price_metrics(last_close, actual_close, last_close)
    metrics["directional_accuracy"] = float(np.mean(np.asarray(actual_close) > np.asarray(last_close)) * 100)
    return metrics


def skill(model_mae: float, naive_mae: float) -> float:
    """1 - MAE_model / MAE_naive: 0 is as good as naive, negative is worse, 1 is perfect."""
    return float(1.0 - model_mae / naive_mae) if naive_mae > 0 else float("nan")


def conformal_quantile(abs_residuals: np.ndarray, coverage: float) -> float:
    """Split-conformal half-width: the ceil((n+1)(coverage))/n empirical quantile of |residuals|."""
    scores = np.sort(np.abs(np.asarray(abs_residuals, dtype=float)))
    n = len(scores)
    if n == 0:
        raise ValueError("conformal_quantile needs at least one residual.")
    rank = min(n, math.ceil((n + 1) * coverage))
    return float(scores[rank - 1])


# --- training -----------------------------------------------------------------------------------------

@dataclass
class TrainedModel:
    """A fitted model with everything the registry stores beside it."""

    symbol: str
    model_type: str
    params: dict[str, Any]
    estimator: Any
    feature_columns: list[str]
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    metrics: dict[str, Any]
    validation: pd.DataFrame = field(repr=False)
    data_source: str = ""


def training_frame(symbol: str, train_end, window_days: int, db: sqlite_utils.Database | None = None,
                   prices: pd.DataFrame | None = None) -> pd.DataFrame:
    """Feature rows with known targets in the `window_days` trading days up to `train_end`.

    The last usable row is the day before `train_end`: its target is the return *into* train_end,
    so nothing after `train_end` is ever seen. `prices` (e.g. sent to a cluster task) replaces the read.
    """
    if prices is None:
        prices = load_prices(symbol, end=train_end, db=db)
    elif train_end is not None:
        prices = prices.loc[:pd.Timestamp(train_end)]
    prices = prices.iloc[-(window_days + WARMUP_DAYS + 1):]
    rows = training_rows(build_features(prices, symbol))
    rows.attrs["source"] = prices.attrs.get("source", "")
    rows.attrs["last_day"] = prices.index[-1]  # the window's last trading day: its close is the last target
    return rows


def checked_training_frame(symbol: str, train_end, window_days: int, progress: Progress | None = None,
                           db: sqlite_utils.Database | None = None, prices: pd.DataFrame | None = None,
                           settings: Settings | None = None) -> pd.DataFrame:
    """`training_frame`, or a MarketDataError in words when it has fewer rows than `min_history_days`.
    `prices` and `settings` let a cluster task train from plain inputs without the database."""
    if progress:
        progress(0.02, f"Loading {symbol} prices")
    rows = training_frame(symbol, train_end, window_days, db=db, prices=prices)
    needed = (settings or get_settings()).min_history_days
    if len(rows) < needed:
        raise MarketDataError(
            f"Not enough history to train on {symbol}: {len(rows)} usable trading days up to "
            f"{pd.Timestamp(train_end or rows.index.max()).date()}, at least {needed} needed "
            f"(the first {WARMUP_DAYS} days of any series only warm up the features)."
        )
    return rows


def walk_forward(
    rows: pd.DataFrame, model_type: str, params: dict[str, Any], n_splits: int, progress: Progress | None = None
) -> pd.DataFrame:
    """Out-of-sample predictions from expanding-window folds (no shuffling), one row per validated day."""
    from sklearn.model_selection import TimeSeriesSplit  # lazy: heavy

    X = check_feature_frame(rows, FEATURE_COLUMNS)
    y = rows[TARGET].to_numpy()
    pieces = []
    for fold, (train_idx, test_idx) in enumerate(TimeSeriesSplit(n_splits=n_splits).split(X)):
        if progress:
            progress(0.1 + 0.7 * fold / n_splits, f"Validating fold {fold + 1} of {n_splits}")
        model = make_estimator(model_type, params).fit(X[train_idx], y[train_idx])
        pieces.append(pd.DataFrame(
            {"fold": fold, "pred_return": model.predict(X[test_idx]), "actual_return": y[test_idx]},
            index=rows.index[test_idx],
        ))
    validation = pd.concat(pieces)
    close = rows.loc[validation.index, "close"].to_numpy()
    validation["last_close"] = close
    validation["actual_close"] = close * np.exp(validation["actual_return"].to_numpy())
    validation["predicted_close"] = close * np.exp(validation["pred_return"].to_numpy())
    return validation


def validation_metrics(validation: pd.DataFrame, coverage: float) -> dict[str, Any]:
    """Model vs naive on the walk-forward predictions, per-fold skill, and the conformal interval."""
    naive = naive_metrics(validation["last_close"], validation["actual_close"])
    if np.all(validation["pred_return"].to_numpy() == 0):  # the naive model itself
        model = dict(naive)
    else:
        model = price_metrics(validation["last_close"], validation["actual_close"], validation["predicted_close"])
    fold_skill = []
    for _, fold in validation.groupby("fold"):
        fold_model = np.mean(np.abs(fold["predicted_close"] - fold["actual_close"]))
        fold_naive = np.mean(np.abs(fold["last_close"] - fold["actual_close"]))
        fold_skill.append(skill(fold_model, fold_naive))
    residuals = np.abs(validation["actual_return"] - validation["pred_return"]).to_numpy()
    last_fold = (validation["fold"] == validation["fold"].max()).to_numpy()
    calibration_q = conformal_quantile(residuals[~last_fold], coverage)
    return {
        **{k: v for k, v in model.items()},
        "naive": naive,
        "skill": skill(model["mae"], naive["mae"]),
        "fold_skill": fold_skill,
        "interval_coverage_nominal": coverage,
        # honest check: calibrated on the earlier folds, measured on the last fold it never saw
        "interval_coverage_empirical": float(np.mean(residuals[last_fold] <= calibration_q)),
        # the deployed interval uses every out-of-sample residual
        "interval_halfwidth_logret": conformal_quantile(residuals, coverage),
        "validation_start": validation.index.min().strftime("%Y-%m-%d"),
        "validation_end": validation.index.max().strftime("%Y-%m-%d"),
    }


def train_model(
    symbol: str,
    model_type: str,
    train_end=None,
    window_days: int | None = None,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    db: sqlite_utils.Database | None = None,
    prices: pd.DataFrame | None = None,
    settings: Settings | None = None,
) -> TrainedModel:
    """Validate walk-forward, then fit on the whole window; nothing after `train_end` is used.

    A cluster task passes plain inputs instead of reading them: `prices` (from `load_prices`) and the
    driver's `settings` (`core.cluster.task_settings`); the result is the same as reading them here."""
    settings = settings or get_settings()
    window_days = window_days or settings.train_window_days
    params = {**DEFAULT_PARAMS.get(model_type, {}), **(params or {})}
    make_estimator(model_type, params)  # fail fast on a bad type or parameter name
    rows = checked_training_frame(symbol, train_end, window_days, progress, db=db, prices=prices, settings=settings)
    validation = walk_forward(rows, model_type, params, settings.validation_splits, progress)
    metrics = validation_metrics(validation, settings.interval_coverage)
    if progress:
        progress(0.85, "Fitting the final model on the whole window")
    estimator = make_estimator(model_type, params).fit(check_feature_frame(rows, FEATURE_COLUMNS), rows[TARGET].to_numpy())
    # serve on one thread: a one-row forecast through joblib's thread pool costs ~10 ms of polling sleeps
    if hasattr(estimator, "n_jobs"):
        estimator.set_params(n_jobs=1)
    if progress:
        progress(1.0, "Done")
    # the recorded train_end is the last trading day whose close the model saw (as a target), even when
    # `train_end` falls on a weekend or is None (= all data)
    log.info("trained %s %s on %d rows: MAE $%.3f vs naive $%.3f (skill %+.3f)", model_type, symbol,
             len(rows), metrics["mae"], metrics["naive"]["mae"], metrics["skill"])
    return TrainedModel(
        symbol=symbol, model_type=model_type, params=params, estimator=estimator,
        feature_columns=list(FEATURE_COLUMNS), train_start=rows.index.min(),
        train_end=rows.attrs["last_day"], metrics=metrics,
        validation=validation, data_source=rows.attrs.get("source", ""),
    )
