"""The serving path: owns `predictions`; routes a request (reads the running experiments), predicts the next close, logs it.

`predict` is the only way a forecast is made, so the prediction log is complete: the UI, the demo
replay, A/B simulations and the scheduler all come through here.

A served prediction is evidence (A/B samples, live metrics and alerts count it), so:
- one request, one row: the database keeps at most one row per (symbol, as_of, model, experiment,
  arm, served) (store migration 002); asking again returns the logged row instead of adding one;
- no served row for a day inside the serving model's training window (`in_training_window`):
  `predict` refuses to log it (`InSampleForecastError`), a what-if (`log_prediction=False`) is fine;
- a broken A/B arm never takes serving down: its requests fall back to the deployed model, with an
  alert (`experiment_arm_broken`); that fallback row is the day's one served row in the test too, so a
  request of the same day routed to a working arm returns it instead of adding a second.

Two kinds of request (`core.registry.model_kind`): a price forecast (`predict`, the default) and a direction
forecast (`predict(..., kind="direction")`): P(up) of the ticker's deployed direction
model, or of a direction A/B test's arm. Both go through the same routing, evidence rules and log; a
direction row stores `p_up` and leaves the price columns NULL, and every price read here skips it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import sqlite_utils

from core.ab_stats import route_key
from core.alerts import raise_alert
from core.features import build_features, check_feature_frame
from core.training import naive_metrics, price_metrics, skill
from core.market import MarketDataError, PriceCache, load_prices, next_trading_day
from core.model_files import LoadedModel
from core.registry import DIRECTION_TYPE, RegistryError, deployed_model, load_model, model_kind
from core.store import get_db, transaction, utc_now, where_clause

log = logging.getLogger(__name__)

HISTORY_DAYS = 300  # trading days of history fed to the features: the EWMs converge to < 1e-6 in it
ARM_BROKEN_ALERT = "experiment_arm_broken"


class InSampleForecastError(ValueError):
    """A forecast asked to be logged as served for a day inside the serving model's training window."""


def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


def in_training_window(train_end: str, day) -> bool:
    """True when a forecast made on `day` would be judged on a close the model was trained on.

    `train_end` is the last trading day whose close the model saw, as the target of the day before
    it; so a forecast made on a day before train_end targets a close inside the training data
    (in-sample: no evidence of live skill), while one made on train_end targets the next, unseen
    close. The first day a model can serve as evidence is therefore its train_end.

    >>> in_training_window("2012-03-01", "2012-02-29"), in_training_window("2012-03-01", "2012-03-01")
    (True, False)
    """
    return _day(day) < str(train_end)[:10]


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
    logged_at: str | None = None  # when the served row was first written (None: not logged)
    p_up: float | None = None  # a direction model's P(close of target_date > last_close); its price fields are NaN

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
    kind: str = "price"  # what the request asks for: "price" or "direction"


def _route(db: sqlite_utils.Database, symbol: str, request_key: str, day=None, kind: str = "price") -> Route:
    """The running A/B experiment's arm for this request, else the deployed model (both of the request's kind)."""
    route = active_route(db, symbol, request_key, day, kind=kind)
    return replace(route, kind=kind) if route is not None else _deployed_route(db, symbol, kind)


def route(experiment: Mapping, request_key: str) -> Route:
    """The `Route` of one request in `experiment` (a dict from `get_experiment`, with its arms)."""
    arms = experiment["arms"]
    chosen = arms[route_key(experiment["id"], request_key, [a["traffic_share"] for a in arms])]
    shadows = tuple((a["arm"], a["model_id"]) for a in arms if a["arm"] != chosen["arm"]) if experiment["shadow"] else ()
    return Route(model_id=chosen["model_id"], experiment_id=experiment["id"], arm=chosen["arm"], shadows=shadows)


def active_route(db: sqlite_utils.Database, symbol: str, request_key: str, day=None, kind: str = "price") -> Route | None:
    """The route for a request on `symbol` when a running experiment covers `day`, else None (serving hook).

    A request dated before the test's start or after its planned end is served by the deployed model
    (replays of past days must not meet a challenger that was not live then), and so is a day inside
    any arm's training window: arms are scored only on days none of them was trained on. Only a test whose
    arms are of the request's `kind` routes it (a direction test never answers a price request). One small
    query per request: experiments is a tiny table and experiment_arms is keyed by experiment id.
    """
    on_day = _day(day) if day is not None else None
    rows = db.execute(
        "SELECT e.id, e.shadow, a.arm, a.model_id, a.traffic_share, m.train_end FROM experiments e "
        "JOIN experiment_arms a ON a.experiment_id = e.id JOIN models m ON m.model_id = a.model_id "
        "WHERE e.symbol = ? AND e.status = 'running' AND (? IS NULL OR ? BETWEEN e.start_date AND e.end_date) "
        "AND (m.model_type = ?) = ? ORDER BY a.arm",
        [symbol, on_day, on_day, DIRECTION_TYPE, int(kind == "direction")],
    ).fetchall()
    if not rows or (on_day is not None and in_training_window(max(r[5] for r in rows), on_day)):
        return None
    experiment = {"id": rows[0][0], "shadow": bool(rows[0][1]),
                  "arms": [{"arm": r[2], "model_id": r[3], "traffic_share": r[4]} for r in rows]}
    return route(experiment, request_key)


def _deployed_route(db: sqlite_utils.Database, symbol: str, kind: str = "price") -> Route:
    deployed = deployed_model(symbol, db=db, kind=kind)
    if deployed is None:
        what = "model" if kind == "price" else "direction model"
        raise RegistryError(f"No {what} is deployed for {symbol}: train one and deploy it on Model Management.")
    return Route(model_id=deployed["model_id"], kind=kind)


def _serving_model(db: sqlite_utils.Database, symbol: str, route: Route, day) -> tuple[LoadedModel, Route]:
    """The routed model, loaded and verified; a broken experiment arm falls back to the deployed model.

    An arm's artifact can fail its integrity check (changed, missing, unreadable) after the test was
    created. One bad arm must not take serving down: the request is answered, and logged, by the
    deployed model as if no test ran, and an alert names the arm. The deployed model failing is
    not hidden: its error propagates.
    """
    try:
        return load_model(route.model_id, db=db), route
    except RegistryError as exc:  # ModelIntegrityError included
        if route.experiment_id is None:
            raise
        fallback = _deployed_route(db, symbol, route.kind)
        _report_broken_arm(db, route, exc, day, f"its requests are served by the deployed model {fallback.model_id}")
        return load_model(fallback.model_id, db=db), fallback


def _report_broken_arm(db: sqlite_utils.Database, route: Route, exc: Exception, day, consequence: str) -> None:
    message = (f"A/B test #{route.experiment_id}: arm {route.arm} ({route.model_id}) cannot be loaded "
               f"({exc}); {consequence}. Restore or retrain the model, or stop the test.")
    log.warning(message)
    # not delivered from the serving path (a webhook must not add seconds to a request): the daily cycle delivers it
    raise_alert(route.model_id, ARM_BROKEN_ALERT, "critical", message, day, db=db, deliver=False)


def feature_row(symbol: str, as_of, db: sqlite_utils.Database,
                cache: PriceCache | None = None) -> tuple[pd.Timestamp, float, np.ndarray, list[str]]:
    """(as_of trading day, its close, the feature row, columns) from the recent price history."""
    start = pd.Timestamp(as_of) - pd.Timedelta(days=int(HISTORY_DAYS * 1.5)) if as_of is not None else None
    prices = load_prices(symbol, start=start, end=as_of, db=db, cache=cache)
    features = build_features(prices.iloc[-HISTORY_DAYS:], symbol, dropna=False)
    return features.index[-1], float(features["close"].iloc[-1]), features.iloc[[-1]], list(features.columns)


def estimate(model: LoadedModel, last_close: float, features: pd.DataFrame) -> dict[str, float]:
    """The answer of one model to one request, as `Prediction` fields: a price forecast, or a direction model's
    P(up) (its price fields NaN)."""
    if model.model_type == DIRECTION_TYPE:
        nan = float("nan")
        p_up = float(model.predict_up(check_feature_frame(features, model.feature_columns))[0])
        return {"p_up": p_up, "predicted_return": nan, "predicted_close": nan, "lower": nan, "upper": nan}
    predicted_return, predicted_close, lower, upper = forecast(model, last_close, features)
    return {"p_up": None, "predicted_return": predicted_return, "predicted_close": predicted_close,
            "lower": lower, "upper": upper}


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
    kind: str = "price",
    cache: PriceCache | None = None,
) -> Prediction:
    """Forecast the close of the trading day after `as_of` (default: the last day with data); with
    `kind="direction"`, P(up) of the ticker's deployed direction model (or direction test arm) instead.

    `log_prediction=True` serves a request: the forecast is logged once. A request already logged
    for the same (symbol, day, model, experiment arm) returns the logged row (same prediction_id,
    nothing written); a day inside the serving model's training window is refused with
    `InSampleForecastError`. `log_prediction=False` is a what-if: computed, never written. `cache`: the daily
    cycle's `PriceCache` (its prices read once per ticker).
    """
    db = db or get_db()
    started = time.perf_counter()
    symbol = (symbol or "").strip().upper()
    day, last_close, features, _ = feature_row(symbol, as_of, db, cache)
    if features.isna().to_numpy()[:, :-2].any():
        raise MarketDataError(f"{symbol}: not enough history before {day.date()} to build the features.")
    request_key = request_key or f"{symbol}:{day:%Y-%m-%d}"
    routed = _route(db, symbol, request_key, day, kind)
    if log_prediction and (logged := _logged_request(db, symbol, f"{day:%Y-%m-%d}", routed)) is not None:
        return logged  # asked before: the logged answer, without loading or running a model
    model, route = _serving_model(db, symbol, routed, day)
    if log_prediction:
        if in_training_window(model.row["train_end"], day):
            raise InSampleForecastError(
                f"{symbol} on {day:%Y-%m-%d} is inside the training window of {route.model_id} (it saw the closes up "
                f"to {model.row['train_end']}): an in-sample forecast is not evidence, so it is not logged as served. "
                f"The first day it can serve is {model.row['train_end']}."
            )
        if route != routed and (logged := _logged_request(db, symbol, f"{day:%Y-%m-%d}", route)) is not None:
            return logged  # a broken arm's request, already answered by the deployed model
    if model_kind(model.model_type) != kind:  # e.g. an A/B arm re-pointed at another kind of model
        raise RegistryError(f"{route.model_id} is a {model.model_type} model: it cannot answer a {kind} request.")
    answer = estimate(model, last_close, features)
    latency_ms = (time.perf_counter() - started) * 1000
    target = next_trading_day(symbol, day, db=db)
    prediction = Prediction(
        symbol=symbol, as_of=f"{day:%Y-%m-%d}", target_date=f"{target:%Y-%m-%d}", last_close=last_close,
        model_id=route.model_id, latency_ms=latency_ms, experiment_id=route.experiment_id, arm=route.arm, **answer,
    )
    if not log_prediction:
        return prediction
    rows = [_row(prediction, request_key, served=True), *_shadow_rows(db, prediction, route, features, request_key)]
    with transaction(db):  # BEGIN IMMEDIATE: a deferred BEGIN fails at once with "database is locked" under concurrent writers
        # looked up again under the write lock: a concurrent request of the same day in the same test, routed
        # to another arm or answered by the fallback, was logged first (the unique index cannot see across arms)
        logged = _logged_request(db, symbol, prediction.as_of, routed) if routed.experiment_id is not None else None
        prediction_id = None if logged is not None else _insert_ignoring_logged(db, rows)
    if logged is not None:
        return logged
    if prediction_id is None:  # another process logged the same request between our look-up and insert
        return _logged_request(db, symbol, prediction.as_of, route)
    return replace(prediction, prediction_id=prediction_id, logged_at=rows[0]["created_at"])


def _shadow_rows(db: sqlite_utils.Database, served: Prediction, route: Route, features: pd.DataFrame,
                 request_key: str) -> list[dict]:
    """Shadow mode: the other arms' forecasts for the same request, logged unserved (a broken arm is skipped)."""
    rows = []
    for arm, shadow_id in route.shadows:  # at most MAX_ARMS - 1 models
        shadow_started = time.perf_counter()
        try:
            shadow_model = load_model(shadow_id, db=db)
        except RegistryError as exc:
            shadow_route = Route(model_id=shadow_id, experiment_id=route.experiment_id, arm=arm)
            _report_broken_arm(db, shadow_route, exc, served.as_of, "its shadow forecasts are not logged")
            continue
        shadow = replace(served, **estimate(shadow_model, served.last_close, features),
                         model_id=shadow_id, arm=arm, latency_ms=(time.perf_counter() - shadow_started) * 1000)
        rows.append(_row(shadow, request_key, served=False))
    return rows


def _insert_ignoring_logged(db: sqlite_utils.Database, rows: list[dict]) -> int | None:
    """INSERT OR IGNORE the served row (first) and its shadows; the served row's id, None if it was logged already.

    The unique index (store migration 002) is what guarantees one row per request, also across
    processes; a shadow row already logged for its arm is left as it is.
    """
    columns = list(rows[0])
    sql = f"INSERT OR IGNORE INTO predictions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    cursor = db.conn.execute(sql, [rows[0][c] for c in columns])
    if len(rows) > 1:
        db.conn.executemany(sql, [[row[c] for c in columns] for row in rows[1:]])
    return cursor.lastrowid if cursor.rowcount == 1 else None


def _logged_request(db: sqlite_utils.Database, symbol: str, as_of: str, route: Route) -> Prediction | None:
    """The served row already logged for this request, if any.

    Outside a test: the row of (symbol, day, model). In a test: the test's served row of that day,
    whichever arm answered it: (symbol, day) is the request, so asking again with another request key
    (which may hash to another arm) must not add a second arm's row for the same day. That includes
    the row of a request whose arm was broken and that the deployed model answered outside the test
    (`_serving_model`): a row without experiment, for a day of the test, logged after the test was
    created. Rows logged before the test existed (a replay of past days by the deployed model) are not
    the test's and do not count.
    """
    if route.experiment_id is None:
        cursor = db.execute(  # the expressions of store migration 002's unique index, so the look-up uses it
            "SELECT * FROM predictions WHERE symbol = ? AND as_of = ? AND model_id = ? AND ifnull(experiment_id, -1) = -1 "
            "AND ifnull(arm, '') = '' AND served = 1", [symbol, as_of, route.model_id])
    else:
        cursor = db.execute(
            "SELECT * FROM predictions WHERE symbol = ? AND as_of = ? AND served = 1 AND (experiment_id = ? OR "
            "(experiment_id IS NULL AND created_at >= (SELECT created_at FROM experiments WHERE id = ?))) "
            "AND (p_up IS NULL) = ? ORDER BY experiment_id IS NULL, id LIMIT 1",
            [symbol, as_of, route.experiment_id, route.experiment_id, int(route.kind == "price")])
    row = cursor.fetchone()
    return _from_row(dict(zip([c[0] for c in cursor.description], row, strict=True))) if row else None


def logged_forecast(symbol: str, as_of, db: sqlite_utils.Database | None = None, kind: str = "price") -> Prediction | None:
    """The forecast served for `symbol` on trading day `as_of`, as logged (the latest if several models
    served that day), or None. Looking at a past day reads this: a page view is not a request. `kind="direction"`:
    the served P(up) instead."""
    db = db or get_db()
    cursor = db.execute("SELECT * FROM predictions WHERE symbol = ? AND as_of = ? AND served = 1 AND (p_up IS NULL) = ? "
                        "ORDER BY id DESC LIMIT 1", [(symbol or "").strip().upper(), _day(as_of), int(kind == "price")])
    row = cursor.fetchone()
    return _from_row(dict(zip([c[0] for c in cursor.description], row, strict=True))) if row else None


def _from_row(row: dict) -> Prediction:
    last_close = row["last_close"]
    predicted_close = float("nan") if row["predicted_close"] is None else row["predicted_close"]
    with np.errstate(divide="ignore", invalid="ignore"):
        predicted_return = float(np.log(predicted_close / last_close)) if last_close else float("nan")
    return Prediction(
        symbol=row["symbol"], as_of=row["as_of"], target_date=row["target_date"], last_close=last_close,
        predicted_close=predicted_close, lower=row["lower"], upper=row["upper"], predicted_return=predicted_return,
        model_id=row["model_id"], latency_ms=row["latency_ms"], experiment_id=row["experiment_id"], arm=row["arm"],
        prediction_id=row["id"], logged_at=row["created_at"], p_up=row.get("p_up"),
    )


def _row(prediction: Prediction, request_key: str, served: bool) -> dict:
    price = prediction.p_up is None  # a direction row leaves the price columns NULL
    return {
        "model_id": prediction.model_id, "symbol": prediction.symbol, "as_of": prediction.as_of, "p_up": prediction.p_up,
        "target_date": prediction.target_date, "predicted_close": prediction.predicted_close if price else None,
        "lower": prediction.lower if price else None, "upper": prediction.upper if price else None,
        "last_close": prediction.last_close,
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


def log_external_prediction(row: dict, db: sqlite_utils.Database | None = None) -> tuple[int, float, bool]:
    """Log a served row made outside the app (validated by `core.abtest.record_prediction`):
    (id, logged predicted_close, inserted). One row per request holds here too: a row already logged
    for that (symbol, day, model, experiment, arm) is returned, not duplicated."""
    db = db or get_db()
    with transaction(db):
        cursor = db.execute(f"INSERT OR IGNORE INTO predictions ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                            list(row.values()))
        if cursor.rowcount == 1:
            return cursor.lastrowid, row["predicted_close"], True
        logged_id, logged_close = db.execute(
            "SELECT id, predicted_close FROM predictions WHERE symbol = ? AND as_of = ? AND model_id = ? "
            "AND ifnull(experiment_id, -1) = ? AND ifnull(arm, '') = ? AND served = 1",
            [row["symbol"], row["as_of"], row["model_id"], row["experiment_id"], row["arm"]]).fetchone()
    return logged_id, logged_close, False


def set_experiment_actual(prediction_id: int, actual_close: float, db: sqlite_utils.Database | None = None) -> bool:
    """Attach the realised close to an experiment's prediction; False when no such row exists."""
    db = db or get_db()
    with transaction(db):
        cursor = db.execute("UPDATE predictions SET actual_close = ? WHERE id = ? AND experiment_id IS NOT NULL",
                            [float(actual_close), int(prediction_id)])
    return cursor.rowcount > 0


def prediction_log(
    symbol: str | None = None, model_id: str | None = None, start=None, end=None,
    served_only: bool = True, db: sqlite_utils.Database | None = None, kind: str = "price",
) -> pd.DataFrame:
    """Predictions as a frame (newest last), with error columns where the actual is known; `kind`: the price
    forecasts (default) or the served P(up) of direction models (`p_up`; their error columns are NaN)."""
    db = db or get_db()
    where, params = where_clause(("symbol = ?", symbol), ("model_id = ?", model_id),
                                 ("p_up IS NULL", kind == "price"), ("p_up IS NOT NULL", kind == "direction"),
                                 ("as_of >= ?", f"{pd.Timestamp(start):%Y-%m-%d}" if start is not None else None),
                                 ("as_of <= ?", f"{pd.Timestamp(end):%Y-%m-%d}" if end is not None else None),
                                 ("served = 1", served_only))
    frame = pd.read_sql_query(f"SELECT * FROM predictions {where} ORDER BY as_of, id", db.conn, params=params)
    frame["abs_error"] = (frame["predicted_close"] - frame["actual_close"]).abs()
    frame["naive_abs_error"] = (frame["last_close"] - frame["actual_close"]).abs()
    return frame


def live_performance(symbol: str, as_of=None, days: int = 30, db: sqlite_utils.Database | None = None,
                     model_id: str | None = None) -> dict | None:
    """Served predictions vs naive over the last `days` prediction days with a known actual, or None.

    Scores belong to the model that earned them: with `model_id`, only that model's served
    predictions count, so a model deployed today has no live history (None) until it has served
    and its forecasts were scored, instead of inheriting its predecessor's. Without `model_id`,
    every model that served the ticker counts (the ticker's history).

    Returns `mae`, `naive_mae`, `skill` and the full `model` / `naive` metric dicts ($, %, direction).
    """
    db = db or get_db()
    until = f"{pd.Timestamp(as_of):%Y-%m-%d}" if as_of is not None else "9999-12-31"
    where, params = where_clause(("symbol = ?", symbol), ("model_id = ?", model_id), ("served = 1", True),
                                 ("actual_close IS NOT NULL", True), ("p_up IS NULL", True), ("as_of <= ?", until), ("target_date <= ?", until))
    first = db.execute(  # the first of the last `days` scored days, walking the index back: never the whole history
        f"SELECT as_of FROM predictions {where} GROUP BY as_of ORDER BY as_of DESC LIMIT 1 OFFSET ?", [*params, days - 1],
    ).fetchone()
    frame = prediction_log(symbol, model_id=model_id, start=first[0] if first else None, end=as_of,
                           db=db).dropna(subset=["actual_close"])
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
