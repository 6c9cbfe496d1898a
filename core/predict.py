"""The serving path: pick the model (deployed, or an A/B arm), predict the next close, log the prediction.

`predict` is the only way a forecast is made, so the prediction log is complete: the UI, the demo
replay, A/B simulations and the scheduler all come through here.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import sqlite_utils

from core.features import build_features, check_feature_frame
from core.training import naive_metrics, price_metrics, skill
from core.market import MarketDataError, load_prices, next_trading_day
from core.registry import LoadedModel, RegistryError, deployed_model, load_model
from core.store import get_db, transaction, utc_now, where_clause

log = logging.getLogger(__name__)

HISTORY_DAYS = 300  # trading days of history fed to the features: the EWMs converge to < 1e-6 in it


@dataclass(frozen=True)
class Prediction:
    symbol: str
    as_of: str
    target_date: str
    last_close: float
    predicted_close: float
    lower: float
    upper: float
    predicted_return: float
    model_id: str
    latency_ms: float
    experiment_id: int | None = None
    arm: str | None = None
    prediction_id: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Route:
    """Which model serves a request, and (in an A/B test) for which experiment arm.

    `shadows` are the other arms' models that also predict (shadow mode) but are not served.
    """

    model_id: str
    experiment_id: int | None = None
    arm: str | None = None
    shadows: tuple[tuple[str, str], ...] = ()


def _route(db: sqlite_utils.Database, symbol: str, request_key: str, day=None) -> Route:
    """The running A/B experiment's arm for this request, else the deployed model.

    Imported here, not at module level: core.abtest's `simulate` calls `predict` (import cycle), and
    a direct call means routing can never be skipped because a module was not imported.
    """
    from core.abtest import active_route

    route = active_route(db, symbol, request_key, day)
    if route is not None:
        return route
    deployed = deployed_model(symbol, db=db)
    if deployed is None:
        raise RegistryError(f"No model is deployed for {symbol}: train one and deploy it on Model Management.")
    return Route(model_id=deployed["model_id"])


def feature_row(symbol: str, as_of, db: sqlite_utils.Database) -> tuple[pd.Timestamp, float, np.ndarray, list[str]]:
    """(as_of trading day, its close, the feature row, columns) from the recent price history."""
    start = pd.Timestamp(as_of) - pd.Timedelta(days=int(HISTORY_DAYS * 1.5)) if as_of is not None else None
    prices = load_prices(symbol, start=start, end=as_of, db=db)
    features = build_features(prices.iloc[-HISTORY_DAYS:], symbol, dropna=False)
    return features.index[-1], float(features["close"].iloc[-1]), features.iloc[[-1]], list(features.columns)


def forecast(model: LoadedModel, last_close: float, features: pd.DataFrame) -> tuple[float, float, float, float]:
    """(predicted return, predicted close, lower, upper) for one feature row."""
    X = check_feature_frame(features, model.feature_columns)
    predicted_return = float(model.predict_returns(X)[0])
    q = model.interval_halfwidth
    return (predicted_return, last_close * np.exp(predicted_return),
            last_close * np.exp(predicted_return - q), last_close * np.exp(predicted_return + q))


def predict(
    symbol: str,
    as_of=None,
    request_key: str | None = None,
    log_prediction: bool = True,
    db: sqlite_utils.Database | None = None,
) -> Prediction:
    """Forecast the close of the trading day after `as_of` (default: the last day with data)."""
    db = db or get_db()
    started = time.perf_counter()
    symbol = (symbol or "").strip().upper()
    day, last_close, features, _ = feature_row(symbol, as_of, db)
    if features.isna().to_numpy()[:, :-2].any():
        raise MarketDataError(f"{symbol}: not enough history before {day.date()} to build the features.")
    request_key = request_key or f"{symbol}:{day:%Y-%m-%d}"
    route = _route(db, symbol, request_key, day)
    model = load_model(route.model_id, db=db)
    predicted_return, predicted_close, lower, upper = forecast(model, last_close, features)
    latency_ms = (time.perf_counter() - started) * 1000
    target = next_trading_day(symbol, day, db=db)
    prediction = Prediction(
        symbol=symbol, as_of=f"{day:%Y-%m-%d}", target_date=f"{target:%Y-%m-%d}", last_close=last_close,
        predicted_close=predicted_close, lower=lower, upper=upper, predicted_return=predicted_return,
        model_id=route.model_id, latency_ms=latency_ms, experiment_id=route.experiment_id, arm=route.arm,
    )
    if not log_prediction:
        return prediction
    rows = [_row(prediction, request_key, served=True)]
    for arm, shadow_id in route.shadows:
        shadow_model = load_model(shadow_id, db=db)
        shadow_started = time.perf_counter()
        s_ret, s_close, s_lower, s_upper = forecast(shadow_model, last_close, features)
        shadow = Prediction(
            symbol=symbol, as_of=prediction.as_of, target_date=prediction.target_date, last_close=last_close,
            predicted_close=s_close, lower=s_lower, upper=s_upper, predicted_return=s_ret, model_id=shadow_id,
            latency_ms=(time.perf_counter() - shadow_started) * 1000, experiment_id=route.experiment_id, arm=arm,
        )
        rows.append(_row(shadow, request_key, served=False))
    with transaction(db):  # BEGIN IMMEDIATE: a deferred BEGIN fails at once with "database is locked" under concurrent writers
        table = db["predictions"]
        table.insert_all(rows)
        prediction_id = table.last_pk if len(rows) == 1 else _served_id(db, request_key, route.model_id)
    return Prediction(**{**prediction.to_dict(), "prediction_id": prediction_id})


def _served_id(db: sqlite_utils.Database, request_key: str, model_id: str) -> int:
    return db.execute(
        "SELECT MAX(id) FROM predictions WHERE request_key = ? AND model_id = ? AND served = 1", [request_key, model_id]
    ).fetchone()[0]


def _row(prediction: Prediction, request_key: str, served: bool) -> dict:
    return {
        "model_id": prediction.model_id, "symbol": prediction.symbol, "as_of": prediction.as_of,
        "target_date": prediction.target_date, "predicted_close": prediction.predicted_close,
        "lower": prediction.lower, "upper": prediction.upper, "last_close": prediction.last_close,
        "latency_ms": prediction.latency_ms, "experiment_id": prediction.experiment_id, "arm": prediction.arm,
        "request_key": request_key, "actual_close": None, "served": int(served), "created_at": utc_now(),
    }


def backfill_actuals(as_of, symbol: str | None = None, db: sqlite_utils.Database | None = None) -> int:
    """Fill `actual_close` for predictions whose target day has arrived by `as_of`; returns rows filled."""
    db = db or get_db()
    day = f"{pd.Timestamp(as_of):%Y-%m-%d}"
    symbol_clause, params = ("AND p.symbol = ?", [symbol]) if symbol else ("", [])
    with db.atomic():
        cursor = db.execute(
            "UPDATE predictions AS p SET actual_close = ("
            "  SELECT close FROM prices WHERE prices.symbol = p.symbol AND prices.date = p.target_date) "
            f"WHERE p.actual_close IS NULL AND p.target_date <= ? {symbol_clause} "
            "AND EXISTS (SELECT 1 FROM prices WHERE prices.symbol = p.symbol AND prices.date = p.target_date)",
            [day, *params],
        )
    return cursor.rowcount


def prediction_log(
    symbol: str | None = None, model_id: str | None = None, start=None, end=None,
    served_only: bool = True, db: sqlite_utils.Database | None = None,
) -> pd.DataFrame:
    """Predictions as a frame (newest last), with error columns where the actual is known."""
    db = db or get_db()
    where, params = where_clause(("symbol = ?", symbol), ("model_id = ?", model_id),
                                 ("as_of >= ?", f"{pd.Timestamp(start):%Y-%m-%d}" if start is not None else None),
                                 ("as_of <= ?", f"{pd.Timestamp(end):%Y-%m-%d}" if end is not None else None),
                                 ("served = 1", served_only))
    frame = pd.read_sql_query(f"SELECT * FROM predictions {where} ORDER BY as_of, id", db.conn, params=params)
    frame["abs_error"] = (frame["predicted_close"] - frame["actual_close"]).abs()
    frame["naive_abs_error"] = (frame["last_close"] - frame["actual_close"]).abs()
    return frame


def live_performance(symbol: str, as_of=None, days: int = 30, db: sqlite_utils.Database | None = None) -> dict | None:
    """Served predictions vs naive over the last `days` prediction days with a known actual, or None.

    Returns `mae`, `naive_mae`, `skill` and the full `model` / `naive` metric dicts ($, %, direction).
    """
    frame = prediction_log(symbol, end=as_of, db=db).dropna(subset=["actual_close"])
    if as_of is not None:  # an actual after as_of was not known on as_of
        frame = frame[frame["target_date"] <= f"{pd.Timestamp(as_of):%Y-%m-%d}"]
    if frame.empty:
        return None
    recent_days = sorted(frame["as_of"].unique())[-days:]
    recent = frame[frame["as_of"].isin(recent_days)]
    model = price_metrics(recent["last_close"], recent["actual_close"], recent["predicted_close"])
    naive = naive_metrics(recent["last_close"], recent["actual_close"])
    return {"n": int(len(recent)), "mae": model["mae"], "naive_mae": naive["mae"],
            "skill": skill(model["mae"], naive["mae"]), "model": model, "naive": naive,
            "start": recent_days[0], "end": recent_days[-1]}


def comparison_table(model_row: dict, live: dict | None) -> pd.DataFrame:
    """Model vs naive, on validation and live, in the units users think in ($, %)."""
    rows = []
    validation = model_row["metrics"]
    for label, model, naive in [("validation", validation, validation["naive"]),
                                *([("live, last 30 days", live["model"], live["naive"])] if live else [])]:
        for who, metrics in (("model", model), ("naive", naive)):
            rows.append({"period": label, "who": who, "MAE $": metrics["mae"], "RMSE $": metrics["rmse"],
                         "MAPE %": metrics["mape"], "direction %": metrics["directional_accuracy"], "days": metrics["n"]})
    return pd.DataFrame(rows)
