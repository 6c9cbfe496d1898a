"""Direction models: will tomorrow's close be above today's? Training, walk-forward validation, calibration, P(up).

A direction model is a registered model of type `direction` (its `params["estimator"]` says which
classifier: XGBoost, or logistic regression, the simple reference). Training, like the regressors':
- walk-forward `TimeSeriesSplit` folds, never shuffled; in each fold the hyper-parameters are chosen
  by `GridSearchCV` on time-ordered inner folds of that fold's training days only (scored by log
  loss), so the validated numbers never saw the days they are measured on;
- the probabilities are calibrated with `CalibratedClassifierCV` on time-ordered inner folds
  (Platt scaling: with ~50-53 % accuracy, isotonic steps fitted on a few hundred days mostly fit noise);
- every fold also scores the two baselines, "always up" (the majority class) and "same as today"
  (persistence), and logistic regression, on the same days (`core.direction_stats`).
The final model is searched and calibrated the same way on the whole window. Its P(up) for a day is
a what-if here (computed, never logged); `forecast_direction` adds the interval of belief.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, TYPE_CHECKING

import numpy as np
import pandas as pd
import sqlite_utils

from core.config import get_settings
from core.direction_stats import (belief_interval, classification_metrics, expected_calibration_error, majority_baseline,
                                  persistence_baseline, reliability_table, versus_baselines)
from core.features import FEATURE_COLUMNS, check_feature_frame, direction_labels, today_up
from core.market import next_trading_day
from core.model_files import LoadedModel
from core.predict import feature_row, in_training_window
from core.registry import get_model, load_model
from core.store import get_db
from core.training import Progress, TrainedModel, checked_training_frame

if TYPE_CHECKING:  # sklearn is imported where it is used, so pages that only list models stay light
    from sklearn.calibration import CalibratedClassifierCV

log = logging.getLogger(__name__)

DIRECTION = "direction"
ESTIMATORS = ("xgb", "logit")
ESTIMATOR_LABELS = {"xgb": "XGBoost classifier", "logit": "Logistic regression (reference)"}
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "xgb": {"n_estimators": 100, "subsample": 0.8, "colsample_bytree": 0.8, "min_child_weight": 5.0, "reg_lambda": 1.0},
    "logit": {},
}
# small on purpose: every combination is fitted once per inner fold of every outer fold
PARAM_GRID: dict[str, dict[str, list]] = {
    "xgb": {"max_depth": [2, 3], "learning_rate": [0.03, 0.1]},
    "logit": {"C": [0.01, 0.1, 1.0]},
}
INNER_SPLITS = 3
CALIBRATION_METHOD = "sigmoid"
PROBABILITY_COLUMNS = ("p_up", "p_raw", "p_logit", "p_always_up", "p_persistence")


def make_classifier(estimator: str, params: dict[str, Any] | None = None, n_jobs: int | None = None):
    """A fresh, unfitted classifier: XGBoost, or a standardised logistic regression."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}.")
    merged = {**DEFAULT_PARAMS[estimator], **(params or {})}
    if estimator == "logit":
        from sklearn.linear_model import LogisticRegression  # lazy: heavy
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, **merged))
    from xgboost import XGBClassifier  # lazy: heavy

    # one thread: a few hundred rows per fit, where OpenMP threads on a busy machine spin (measured 0.15 s
    # on one thread vs 8 s on two under load); the grid's many small fits are the cost, not one big one
    n_jobs = 1 if n_jobs is None else n_jobs
    return XGBClassifier(random_state=0, n_jobs=n_jobs, tree_method="hist", eval_metric="logloss", **merged)


def _grid(estimator: str) -> dict[str, list]:
    prefix = "logisticregression__" if estimator == "logit" else ""
    return {prefix + name: values for name, values in PARAM_GRID[estimator].items()}


def search(X: np.ndarray, y: np.ndarray, estimator: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(the unfitted classifier with the best grid point, that point) by GridSearchCV on time-ordered folds."""
    from sklearn.model_selection import GridSearchCV, TimeSeriesSplit  # lazy: heavy

    grid = GridSearchCV(make_classifier(estimator, params), _grid(estimator), cv=TimeSeriesSplit(INNER_SPLITS),
                        scoring="neg_log_loss", refit=False, n_jobs=1)
    grid.fit(X, y)
    best = {name.split("__")[-1]: value for name, value in grid.best_params_.items()}
    return make_classifier(estimator, {**params, **best}), best


def calibrated(classifier: Any, X: np.ndarray, y: np.ndarray) -> CalibratedClassifierCV:
    """`classifier` calibrated on time-ordered inner folds (each fold fitted on the past, calibrated on what follows)."""
    from sklearn.base import clone  # lazy: heavy
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import TimeSeriesSplit

    return CalibratedClassifierCV(clone(classifier), method=CALIBRATION_METHOD, cv=TimeSeriesSplit(INNER_SPLITS),
                                  ensemble=True).fit(X, y)


def walk_forward_direction(rows: pd.DataFrame, estimator: str, params: dict[str, Any], n_splits: int,
                           progress: Progress | None = None) -> pd.DataFrame:
    """Out-of-sample P(up) of the calibrated and raw classifier, logistic regression and both baselines, per day."""
    from sklearn.base import clone  # lazy: heavy
    from sklearn.model_selection import TimeSeriesSplit

    X = check_feature_frame(rows, FEATURE_COLUMNS)
    y, up_today = direction_labels(rows), today_up(rows)
    pieces = []
    for fold, (train, test) in enumerate(TimeSeriesSplit(n_splits=n_splits).split(X)):
        if progress:
            progress(0.1 + 0.7 * fold / n_splits, f"Validating fold {fold + 1} of {n_splits}: grid search, calibration")
        best, _ = search(X[train], y[train], estimator, params)
        raw = clone(best).fit(X[train], y[train])
        p_logit = (raw.predict_proba(X[test])[:, 1] if estimator == "logit"
                   else search_and_fit(X[train], y[train], "logit").predict_proba(X[test])[:, 1])
        pieces.append(pd.DataFrame({
            "fold": fold, "label": y[test], "today_up": up_today[test],
            "p_up": calibrated(best, X[train], y[train]).predict_proba(X[test])[:, 1],
            "p_raw": raw.predict_proba(X[test])[:, 1], "p_logit": p_logit,
            "p_always_up": majority_baseline(y[train], len(test)),
            "p_persistence": persistence_baseline(up_today[train], y[train], up_today[test]),
            "close": rows["close"].to_numpy()[test],
        }, index=rows.index[test]))
    return pd.concat(pieces)


def search_and_fit(X: np.ndarray, y: np.ndarray, estimator: str) -> Any:
    """The reference: the grid's best classifier of `estimator`, fitted on (X, y), uncalibrated."""
    best, _ = search(X, y, estimator, {})
    return best.fit(X, y)


def direction_metrics(validation: pd.DataFrame) -> dict[str, Any]:
    """The walk-forward numbers stored with a direction model: the model against both baselines and the reference."""
    y = validation["label"].to_numpy()
    model = classification_metrics(y, validation["p_up"])
    baselines = {name: classification_metrics(y, validation[f"p_{name}"]) for name in ("always_up", "persistence")}
    per_fold = validation.groupby("fold")
    fold_accuracy = [float(np.mean((f["p_up"] >= 0.5) == f["label"])) for _, f in per_fold]
    fold_baseline = [max(float(np.mean((f[f"p_{b}"] >= 0.5) == f["label"])) for b in baselines) for _, f in per_fold]
    return {
        "kind": DIRECTION, **model, "baselines": baselines, **versus_baselines(model, baselines),
        "uncalibrated": classification_metrics(y, validation["p_raw"]),
        "reference": {"logit": classification_metrics(y, validation["p_logit"])},
        "ece": expected_calibration_error(y, validation["p_up"]),
        "ece_uncalibrated": expected_calibration_error(y, validation["p_raw"]),
        "reliability": reliability_table(y, validation["p_up"]).to_dict("records"),
        "fold_accuracy": fold_accuracy, "fold_baseline_accuracy": fold_baseline,
        "fold_skill": [a - b for a, b in zip(fold_accuracy, fold_baseline)],
        "validation_start": validation.index.min().strftime("%Y-%m-%d"),
        "validation_end": validation.index.max().strftime("%Y-%m-%d"),
        "calibration": f"CalibratedClassifierCV({CALIBRATION_METHOD}, TimeSeriesSplit({INNER_SPLITS}))",
    }


def _serve_on_one_thread(model: CalibratedClassifierCV) -> None:
    """One-row predictions through a thread pool cost more in polling than they gain."""
    for member in model.calibrated_classifiers_:
        if "n_jobs" in member.estimator.get_params():
            member.estimator.set_params(n_jobs=1)


def train_direction(symbol: str, estimator: str = "xgb", train_end=None, window_days: int | None = None,
                    params: dict[str, Any] | None = None, progress: Progress | None = None,
                    db: sqlite_utils.Database | None = None) -> TrainedModel:
    """Validate walk-forward, then search, fit and calibrate on the whole window; nothing after `train_end`."""
    settings, params = get_settings(), {**DEFAULT_PARAMS.get(estimator, {}), **(params or {})}
    make_classifier(estimator, params)  # fail fast on a bad estimator or parameter name
    rows = checked_training_frame(symbol, train_end, window_days or settings.train_window_days, progress, db=db)
    validation = walk_forward_direction(rows, estimator, params, settings.validation_splits, progress)
    metrics = direction_metrics(validation)
    if progress:
        progress(0.85, "Grid search and calibration of the final model on the whole window")
    X, y = check_feature_frame(rows, FEATURE_COLUMNS), direction_labels(rows)
    best, chosen = search(X, y, estimator, params)
    final = calibrated(best, X, y)
    _serve_on_one_thread(final)
    if progress:
        progress(1.0, "Done")
    log.info("trained direction/%s %s on %d rows: accuracy %.3f vs best baseline %s, Brier skill %+.4f",
             estimator, symbol, len(rows), metrics["accuracy"], metrics["best_baseline"], metrics["skill"])
    return TrainedModel(symbol=symbol, model_type=DIRECTION, params={"estimator": estimator, **params, **chosen},
                        estimator=final, feature_columns=list(FEATURE_COLUMNS), train_start=rows.index.min(),
                        train_end=rows.attrs["last_day"], metrics=metrics, validation=validation,
                        data_source=rows.attrs.get("source", ""))


def up_probability(model: CalibratedClassifierCV, X: np.ndarray) -> np.ndarray:
    """P(up) per row: the same numbers as `model.predict_proba(X)[:, 1]` (tested), the serving path's fast way
    (`LoadedModel.predict_up`, which the served P(up) uses too)."""
    return LoadedModel("", "", DIRECTION, model, [], float("nan"), {}).predict_up(X)


# --- P(up) for one day ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DirectionForecast:
    """P(close of `target_date` > close of `as_of`), with its interval of belief; computed, not logged."""

    model_id: str
    symbol: str
    as_of: str
    target_date: str
    last_close: float
    p_up: float
    belief_low: float
    belief_high: float
    in_sample: bool
    latency_ms: float

    def to_dict(self) -> dict:
        return asdict(self)


def forecast_direction(model_id: str, as_of=None, db: sqlite_utils.Database | None = None) -> DirectionForecast:
    """P(up) of `model_id` for the day after `as_of` (default: the ticker's last data day), from the verified model."""
    db = db or get_db()
    started = time.perf_counter()
    row = get_model(model_id, db=db)
    if row["model_type"] != DIRECTION:
        raise ValueError(f"{model_id} is a {row['model_type']} model, not a direction model.")
    loaded = load_model(model_id, db=db)
    day, last_close, features, _ = feature_row(row["symbol"], as_of, db)
    p_up = float(up_probability(loaded.estimator, check_feature_frame(features, loaded.feature_columns))[0])
    low, high = belief_interval(p_up, pd.DataFrame(row["metrics"].get("reliability", [])))
    return DirectionForecast(model_id=model_id, symbol=row["symbol"], as_of=f"{day:%Y-%m-%d}",
                             target_date=f"{next_trading_day(row['symbol'], day, db=db):%Y-%m-%d}",
                             last_close=last_close, p_up=p_up, belief_low=low, belief_high=high,
                             in_sample=in_training_window(row["train_end"], day),
                             latency_ms=(time.perf_counter() - started) * 1000)

