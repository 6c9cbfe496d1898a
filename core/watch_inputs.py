"""The sequential detectors' inputs, read in batches: prices, features and forecasts of many models at once.

Reads only (prices through `core.market`, the prediction log, validation predictions through
`core.registry`); `core/drift_watch.py` owns what is computed from them. A day's update of 1,000 models
spent ~5 s reading each model's prices, features and forecasts one model at a time (issue 13); here a
ticker's prices are read once, its features built once per anchor (below), and the forecasts of every
model come from one query.

Inputs are read from a fixed anchor per model (`WARMUP_CALENDAR_DAYS` before its `train_start`, as the
window check does), so a day's features are the same numbers whenever they are computed (the EWMs of
MACD and RSI depend on where they start): `core.drift_watch.replay` reproduces stored rows exactly while
the price history and the prediction log of those days stay as they were. Models of one ticker with the
same anchor share one feature frame; a slice of the ticker's prices from an anchor is the frame
`load_prices` gives from that anchor, so batching changes no number (tested).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from core.direction_stats import probability_losses
from core.features import build_features
from core.market import MarketDataError, PriceCache, load_prices
from core.registry import ModelIntegrityError, model_kind, validation_predictions
from core.store import get_db
from core.watch_step import DayInputs, dumps

log = logging.getLogger(__name__)

WARMUP_CALENDAR_DAYS = 120  # the inputs' fixed anchor before train_start (> 50 trading days: the longest window)


def day_text(value: Any) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


def anchor(model: Mapping) -> pd.Timestamp:
    return pd.Timestamp(model["train_start"]) - pd.Timedelta(days=WARMUP_CALENDAR_DAYS)


def _frame(model: Mapping, end: Any, db: sqlite_utils.Database) -> pd.DataFrame:
    """The model's features (+ close) from the fixed anchor to `end` (None: the ticker's last day)."""
    return build_features(load_prices(model["symbol"], start=anchor(model), end=end, db=db), model["symbol"],
                          dropna=False)


def day_errors(model: Mapping, validation: pd.DataFrame) -> np.ndarray:
    """A model's error per validation day, in the units its live errors are measured in: a price model's
    |predicted - actual log return|, a direction model's log loss of its P(up) (its scoring rule)."""
    if model_kind(model["model_type"]) == "direction":
        return probability_losses(validation["p_up"].to_numpy(dtype=float), validation["label"].to_numpy(dtype=float))[0]
    return np.abs(validation["pred_return"] - validation["actual_return"]).to_numpy(dtype=float)


def reference_inputs(model: Mapping, db: sqlite_utils.Database | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None, pd.DataFrame, float | None]:
    """(daily log returns, validation error / its mean, feature frame, that mean) of the model's training window
    (`day_errors`: |error| and the MAE of a price model, log loss and its mean of a direction model); the errors
    are None when its validation predictions are missing."""
    db = db or get_db()
    start, end = pd.Timestamp(model["train_start"]), pd.Timestamp(model["train_end"])
    frame = _frame(model, end, db)
    returns = np.log(frame["close"]).diff().loc[start:end].dropna().to_numpy()
    features = frame.loc[start:end, list(model["features"])].dropna()
    try:
        validation = validation_predictions(model["model_id"])
    except ModelIntegrityError as exc:
        log.warning("%s: drift profile without the error detector (%s)", model["model_id"], exc)
        return returns, None, features, None
    absolute = day_errors(model, validation)
    scale = float(np.mean(absolute))
    return returns, (absolute / scale if scale > 0 else None), features, (scale if scale > 0 else None)


def _feature_frames(models: Sequence[Mapping], until: Any, db: sqlite_utils.Database,
                    cache: PriceCache | None = None) -> list[pd.DataFrame | MarketDataError]:
    """Per model its feature frame from its anchor to `until`: one price read per ticker, one feature build per
    (ticker, anchor). A read that fails for the ticker's earliest anchor is retried per anchor, so one model's
    bad or missing data never costs another model its inputs."""
    out: list[pd.DataFrame | MarketDataError] = [MarketDataError("not read")] * len(models)
    by_symbol: dict[str, dict[pd.Timestamp, list[int]]] = {}
    for i, model in enumerate(models):
        by_symbol.setdefault(model["symbol"], {}).setdefault(anchor(model), []).append(i)
    for symbol, anchors in by_symbol.items():
        try:
            prices = load_prices(symbol, start=min(anchors), end=until, db=db, cache=cache)
        except MarketDataError:
            prices = None
        for start, members in anchors.items():
            try:
                sliced = (load_prices(symbol, start=start, end=until, db=db, cache=cache) if prices is None
                          else prices.loc[start:])
                if sliced.empty:  # what load_prices says for an empty range
                    raise MarketDataError(f"{symbol}: no trading days between {start:%Y-%m-%d} and "
                                          f"{'the end' if until is None else day_text(until)}.")
                frame: pd.DataFrame | MarketDataError = build_features(sliced, symbol, dropna=False)
            except MarketDataError as exc:
                frame = exc
            for i in members:
                out[i] = frame
    return out


def _forecasts(wanted: Sequence[tuple[str, str, str]], db: sqlite_utils.Database
               ) -> dict[tuple[str, str, str], tuple[float | None, float | None]]:
    """(model_id, made on, for day) -> (predicted close, P(up)) of the forecasts with target day in each model's
    (first, last) range, all models in one query; the served row first, else the earliest."""
    if not wanted:
        return {}
    rows = db.execute(
        "SELECT p.model_id, p.as_of, p.target_date, p.predicted_close, p.p_up FROM json_each(?) AS w "
        "JOIN predictions AS p ON p.model_id = json_extract(w.value, '$[0]') "
        "AND p.target_date >= json_extract(w.value, '$[1]') AND p.target_date <= json_extract(w.value, '$[2]') "
        "ORDER BY p.served DESC, p.id", [dumps(list(wanted))]).fetchall()
    made: dict[tuple[str, str, str], tuple[float | None, float | None]] = {}
    for model_id, as_of, target, predicted, p_up in rows:
        made.setdefault((model_id, as_of, target), (predicted, p_up))
    return made


class _Columns:
    """One feature frame as numpy, converted once however many models share it: day strings, log close, and
    the feature matrix with each column's position."""

    def __init__(self, frame: pd.DataFrame):
        self.index = frame.index
        self.days = np.asarray(frame.index.strftime("%Y-%m-%d"), dtype=object)
        self.log_close = np.log(frame["close"].to_numpy(dtype=float))
        self.matrix = frame.to_numpy(dtype=float)
        self.position = {name: k for k, name in enumerate(frame.columns)}

    def take(self, names: Sequence[str], rows: np.ndarray) -> np.ndarray:
        return self.matrix[np.ix_(rows, [self.position[name] for name in names])]


def day_inputs_many(models: Sequence[Mapping], profiles: Sequence[Mapping], afters: Sequence[str], until: Any,
                    db: sqlite_utils.Database | None = None, cache: PriceCache | None = None
                    ) -> list[DayInputs | MarketDataError]:
    """Per model the trading days of its ticker in (after, until] and their raw inputs (`until` None: to the last
    day of the data; a day beyond the data is never among them), or the MarketDataError that says why not.

    err[i] = the error of the forecast the model made on the trading day before days[i], divided by the profile's
    error_scale: |log(predicted close / close)| for a price model, the log loss of its P(up) for a direction
    model (`day_errors`' units; NaN when it made none or has no error scale)."""
    db = db or get_db()
    frames = _feature_frames(models, until, db, cache)
    converted: dict[int, _Columns] = {}
    parts: list[tuple[_Columns, np.ndarray] | MarketDataError] = []
    for frame, after in zip(frames, afters):
        if isinstance(frame, MarketDataError):
            parts.append(frame)
            continue
        columns = converted.get(id(frame)) or converted.setdefault(id(frame), _Columns(frame))
        start = int(np.searchsorted(columns.index.values, pd.Timestamp(after).to_datetime64(), side="right"))
        parts.append((columns, np.arange(max(start, 1), len(columns.days))))
    made = _forecasts([(m["model_id"], part[0].days[part[1][0]], part[0].days[part[1][-1]])
                       for m, part, profile in zip(models, parts, profiles)
                       if not isinstance(part, MarketDataError) and len(part[1]) and profile.get("error_scale")], db)
    out: list[DayInputs | MarketDataError] = []
    for model, profile, part in zip(models, profiles, parts):
        if isinstance(part, MarketDataError):
            out.append(part)
            continue
        columns, positions = part
        days, previous = list(columns.days[positions]), list(columns.days[positions - 1])
        close, scale = np.exp(columns.log_close[positions]), profile.get("error_scale")
        ret = columns.log_close[positions] - columns.log_close[positions - 1]
        err = np.full(len(days), np.nan)
        if scale:  # the day's lookups, then one vectorised error per kind (a catch-up can be a year of days)
            found = np.array([made.get((model["model_id"], before, day), (None, None))
                              for day, before in zip(days, previous)], dtype=float).reshape(len(days), 2)
            if model_kind(model["model_type"]) == "direction":
                known = np.isfinite(found[:, 1])
                err[known] = probability_losses(found[known, 1], (ret[known] > 0).astype(float))[0] / scale
            else:
                known = found[:, 0] > 0  # NaN (no forecast) compares False
                err[known] = np.abs(np.log(found[known, 0] / close[known])) / scale
        streams = profile["detectors"].get("feature_scale", {}).get("streams", [])
        out.append(DayInputs(days=days, ret=ret, err=err,
                             feat=columns.take(streams, positions), prev=columns.take(streams, positions - 1),
                             values=columns.take(profile["range"]["features"], positions)))
    return out


def day_inputs(model: Mapping, profile: Mapping, after: str, until: Any, db: sqlite_utils.Database | None = None
               ) -> DayInputs:
    """`day_inputs_many` for one model; raises its MarketDataError."""
    [found] = day_inputs_many([model], [profile], [after], until, db)
    if isinstance(found, MarketDataError):
        raise found
    return found
