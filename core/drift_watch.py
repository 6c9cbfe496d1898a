"""Drift watch: owns `drift_profiles` and `drift_watch_state`; the sequential detectors of each deployed model, a day at a time.

The statistics are `core/sequential.py` (CUSUM banks, `fit_profile`) and `core/calibration.py` (thresholds
calibrated to `MLSA_DRIFT_ARL_DAYS`); this module gives them data, a memory and a place in the product:

- `ensure_profile(model_id)`: the model's calibrated profile (standardisers, thresholds, feature ranges),
  fitted once on its reference (training) window: the daily log returns, its walk-forward validation
  errors divided by their mean (the validation MAE, in log-return units) and its feature frame; stored in
  `drift_profiles`. Later calls read it (a changed `MLSA_DRIFT_ARL_DAYS` applies to models fitted after).
- `update(model_ids, day)`: advances every given model to `day` (default: the last day of its ticker's
  data), one trading day at a time in order, from the day after the last stored one (the first time: the
  day after `train_end`), so a gap is caught up and a day already stored is never applied twice. Each day
  the detectors see that day's log return, the error of the model's forecast made the trading day before
  (|log(predicted close / close)| / validation MAE; NaN when it made none: the error detector skips the
  day) and the change of its features since the day before; `feature_range` flags values far outside the
  training range. One row per (model, detector, day) goes to `drift_watch_state`: the detector's full
  state (JSON, `Cusum.to_dict`), its leading statistic and threshold, the alarm flag and the onset. Many
  models are advanced together, one `CusumArray` step per detector and day.
- `history`, `alarms`, `replay`: what the Drift page, `core/drift.py`'s verdict and alerts read.

Inputs are read from a fixed anchor (120 calendar days before the model's `train_start`, as the window
check does), so a day's features are the same numbers whenever they are computed: `replay` reproduces the
stored rows exactly while the price history and the prediction log of those days stay as they were.

An alarm is *current* for `HOLD_DAYS` trading days (its own day included). After an alarm a CUSUM starts
again from zero; a change that lasts makes it alarm again, and alarms of one detector and direction whose
new excursion starts within `HOLD_DAYS` of the previous alarm form one *episode*, reported with the onset
of its first alarm ("changed since").
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from core.config import get_settings
from core.drift_report import RANGE, combine, in_words, reason, retrain_trigger  # noqa: F401 (alarms in words)
from core.features import build_features
from core.market import MarketDataError, load_prices
from core.registry import ModelIntegrityError, get_model, list_models, validation_predictions
from core.sequential import (DETECTORS, Cusum, CusumArray, alarm_records, fit_profile, innovations_many,
                             new_detectors, range_alarms, stack_standardisers)
from core.store import get_db, transaction, utc_now

log = logging.getLogger(__name__)

HOLD_DAYS = 5  # trading days an alarm stays current; alarms closer than this form one episode
WARMUP_CALENDAR_DAYS = 120  # the inputs' fixed anchor before train_start (> 50 trading days: the longest window)
HISTORY_COLUMNS = ["as_of", "detector", "signal", "statistic", "threshold", "ratio", "alarm", "onset_day"]


def _day(value: Any) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _signal(detector: str) -> str:
    return DETECTORS[detector].signal if detector in DETECTORS else "values far outside the training range"


# --- profiles -----------------------------------------------------------------------------------------

def _anchor(model: Mapping) -> pd.Timestamp:
    return pd.Timestamp(model["train_start"]) - pd.Timedelta(days=WARMUP_CALENDAR_DAYS)


def _frame(model: Mapping, end: Any, db: sqlite_utils.Database) -> pd.DataFrame:
    """The model's features (+ close) from the fixed anchor to `end` (None: the ticker's last day)."""
    prices = load_prices(model["symbol"], start=_anchor(model), end=end, db=db)
    return build_features(prices, model["symbol"], dropna=False)


def reference_inputs(model: Mapping, db: sqlite_utils.Database | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None, pd.DataFrame, float | None]:
    """(daily log returns, validation |error| / validation MAE, feature frame, validation MAE) of the model's
    training window; the errors are None when its validation predictions are missing."""
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
    absolute = np.abs(validation["pred_return"] - validation["actual_return"]).to_numpy(dtype=float)
    scale = float(np.mean(absolute))
    return returns, (absolute / scale if scale > 0 else None), features, (scale if scale > 0 else None)


def fit_model_profile(model: Mapping, db: sqlite_utils.Database | None = None) -> dict:
    """`core.sequential.fit_profile` on the model's reference window (0.1-0.5 s), plus `error_scale` (the
    validation MAE in log-return units that live errors are divided by). Computes, stores nothing."""
    returns, errors, features, scale = reference_inputs(model, db)
    seed = int(hashlib.sha256(model["model_id"].encode()).hexdigest()[:8], 16)
    profile = fit_profile(returns, errors, features, arl_days=get_settings().drift_arl_days, seed=seed)
    return profile | {"error_scale": scale}


def get_profile(model_id: str, db: sqlite_utils.Database | None = None) -> dict | None:
    db = db or get_db()
    row = db.execute("SELECT profile_json FROM drift_profiles WHERE model_id = ?", [model_id]).fetchone()
    return json.loads(row[0]) if row else None


def ensure_profile(model_id: str, db: sqlite_utils.Database | None = None) -> dict:
    """The stored profile of `model_id`, fitted and stored first if missing (idempotent; one SELECT when present)."""
    db = db or get_db()
    stored = get_profile(model_id, db)
    if stored is not None:
        return stored
    profile = fit_model_profile(get_model(model_id, db=db), db)
    with transaction(db):
        db.execute("INSERT OR IGNORE INTO drift_profiles (model_id, profile_json, arl_days, created_at) VALUES (?, ?, ?, ?)",
                   [model_id, _dumps(profile), float(profile["arl_days"]), utc_now()])
    log.info("%s: drift profile fitted (ARL %.0f days, estimate %.0f)", model_id, profile["arl_days"], profile["arl_estimate"])
    return get_profile(model_id, db)  # as stored: every later day uses exactly these numbers


# --- the days' inputs ---------------------------------------------------------------------------------

@dataclass
class DayInputs:
    """One model's raw inputs for the days to apply, in order: days (n), ret (n), err (n; NaN: no forecast),
    feat / prev (n, feature_scale streams) today and the trading day before, values (n, range features)."""

    days: list[str]
    ret: np.ndarray
    err: np.ndarray
    feat: np.ndarray
    prev: np.ndarray
    values: np.ndarray


def _errors(model_id: str, days: Sequence[str], previous: Sequence[str], close: np.ndarray, scale: float | None,
            db: sqlite_utils.Database) -> np.ndarray:
    """|log(predicted close / close)| / scale of the model's forecast made on previous[i] for days[i]."""
    out = np.full(len(days), np.nan)
    if not days or not scale:
        return out
    rows = db.execute("SELECT as_of, target_date, predicted_close FROM predictions WHERE model_id = ? AND as_of >= ? "
                      "AND as_of <= ? ORDER BY served DESC, id", [model_id, previous[0], previous[-1]]).fetchall()
    made: dict[tuple[str, str], float] = {}
    for as_of, target, predicted in rows:
        made.setdefault((as_of, target), predicted)  # the served row first, else the earliest
    for i, (day, before) in enumerate(zip(days, previous)):
        predicted = made.get((before, day))
        if predicted is not None and predicted > 0:
            out[i] = abs(np.log(predicted / close[i])) / scale
    return out


def day_inputs(model: Mapping, profile: Mapping, after: str, until: Any, db: sqlite_utils.Database | None = None
               ) -> DayInputs:
    """The trading days of the model's ticker in (after, until] and their raw inputs (`until` None: to the
    last day of the data; a day beyond the data is never among them)."""
    db = db or get_db()
    frame = _frame(model, until, db)
    index = frame.index
    positions = np.flatnonzero(index > pd.Timestamp(after))
    positions = positions[positions >= 1]
    log_close = np.log(frame["close"].to_numpy(dtype=float))
    streams = profile["detectors"].get("feature_scale", {}).get("streams", [])
    matrix = frame[streams].to_numpy(dtype=float)
    days = [_day(d) for d in index[positions]]
    previous = [_day(d) for d in index[positions - 1]]
    return DayInputs(days=days, ret=log_close[positions] - log_close[positions - 1],
                     err=_errors(model["model_id"], days, previous, np.exp(log_close[positions]),
                                 profile.get("error_scale"), db),
                     feat=matrix[positions], prev=matrix[positions - 1],
                     values=frame[profile["range"]["features"]].to_numpy(dtype=float)[positions])


# --- one day for many models (pure: no database) -------------------------------------------------------

_NAT = np.iinfo(np.int64).min  # "no day", as in core.sequential's vectorised state


def _days_to_int(values: Any) -> np.ndarray:
    """Day strings (None: no day), nested lists allowed, as int64 days since 1970 (None -> _NAT), in one pass."""
    return np.array(values, dtype="datetime64[D]").astype(np.int64)


def _ints_to_days(values: np.ndarray) -> np.ndarray:
    """The inverse: an object array of day strings, None for _NAT."""
    text = np.datetime_as_string(values.astype("datetime64[D]"), unit="D").astype(object)
    text[values == _NAT] = None
    return text


def array_from_dicts(states: Sequence[Mapping]) -> CusumArray:
    """`CusumArray.from_states` for state dicts (`Cusum.to_dict()`), with the days converted in one numpy pass
    (the per-element conversion dominated a day's update of 1,000 models). Same arrays (tested)."""
    first = states[0]
    out = CusumArray(np.array([s["thresholds"] for s in states], dtype=float), first["drifts"], first["two_sided"],
                     first["streams"], first["name"])
    out.stat = np.array([s["stat"] for s in states], dtype=float)
    out.start = np.array([s["start"] for s in states], dtype=np.int64)
    out.start_day = _days_to_int([s["start_day"] for s in states]).reshape(out.stat.shape)
    for key in ("n", "alarms", "last_alarm"):
        setattr(out, key, np.array([s[key] for s in states], dtype=np.int64))
    out.last_alarm_day = _days_to_int([s["last_alarm_day"] for s in states])
    out.day = _days_to_int([s["day"] for s in states])
    sides, streams, drifts = ("up", "down"), list(first["streams"]), [float(k) for k in first["drifts"]]
    out.alarm_at = np.array([-1 if s["alarm"] is None else int(np.ravel_multi_index(
        (sides.index(s["alarm"]["direction"]), streams.index(s["alarm"]["stream"]), drifts.index(s["alarm"]["drift"])),
        out.stat.shape[1:])) for s in states], dtype=np.int64)
    return out


def dicts_from_array(array: CusumArray) -> list[dict]:
    """`[s.to_dict() for s in array.to_states()]` without the per-object deep copies (tested equal)."""
    n_models, shape = len(array.n), array.stat.shape[1:]
    start_day, last_alarm_day, day = (_ints_to_days(a) for a in (array.start_day, array.last_alarm_day, array.day))
    thresholds, drifts = array.thresholds.tolist(), array.drifts.tolist()
    stat, start, start_days = array.stat.tolist(), array.start.tolist(), start_day.tolist()
    out = []
    for i in range(n_models):
        alarm = None
        if array.alarm_at[i] >= 0:
            side, f, j = np.unravel_index(array.alarm_at[i], shape)
            alarm = {"direction": ("up", "down")[side], "stream": array.streams[f], "drift": drifts[j],
                     "statistic": stat[i][side][f][j], "threshold": thresholds[i][j], "onset": start[i][side][f][j],
                     "onset_day": start_days[i][side][f][j]}
        out.append({"name": array.name, "thresholds": thresholds[i], "drifts": list(drifts),
                    "two_sided": bool(array.two_sided), "streams": list(array.streams), "n": int(array.n[i]),
                    "alarms": int(array.alarms[i]), "last_alarm": int(array.last_alarm[i]),
                    "last_alarm_day": last_alarm_day[i], "day": day[i], "stat": stat[i], "start": start[i],
                    "start_day": start_days[i], "alarm": alarm})
    return out


def _leading(state: Mapping) -> tuple[float, float]:
    """(statistic, threshold) of the component nearest its threshold (largest S / h)."""
    stat = np.asarray(state["stat"], dtype=float)
    thresholds = np.asarray(state["thresholds"], dtype=float)
    ratio = stat / thresholds  # broadcasts over the last axis (drifts)
    flat = int(np.argmax(ratio))
    return float(stat.flat[flat]), float(thresholds[flat % len(thresholds)])


def _range_row(profile: Mapping, values: np.ndarray, day: str) -> dict:
    limits = profile["range"]
    low, high = np.asarray(limits["low"], dtype=float), np.asarray(limits["high"], dtype=float)
    span = np.maximum((high - low) / 3.0, 1e-300)
    with np.errstate(invalid="ignore"):
        beyond = np.maximum(values - high, low - values) / span + 1.0
    statistic = float(np.nanmax(beyond)) if np.isfinite(beyond).any() else 0.0
    outside = range_alarms(profile, dict(zip(limits["features"], values)), day)
    return {"detector": RANGE, "as_of": day, "state_json": _dumps({"outside": outside}),
            "statistic": max(0.0, statistic), "threshold": 1.0, "alarm": int(bool(outside)),
            "onset_day": day if outside else None}


def _signature(profile: Mapping) -> str:
    return _dumps([[name, d["streams"], d["drifts"], d["two_sided"]] for name, d in profile["detectors"].items()])


def advance(profiles: Sequence[Mapping], states: Sequence[Mapping[str, Mapping] | None],
            inputs: Sequence[DayInputs]) -> list[list[dict]]:
    """Apply each model's days in order; returns per model its rows (one per detector and day, without model_id).

    states: per model, detector -> `Cusum.to_dict()` of its last stored day (None: fresh detectors).
    Models with the same detectors are advanced together: per day one `innovations_many` and one
    `CusumArray.update` per detector; a model without that day gets NaN, which leaves its state as it is.
    """
    out: list[list[dict]] = [[] for _ in profiles]
    groups: dict[str, list[int]] = {}
    for i, profile in enumerate(profiles):
        if inputs[i].days:
            groups.setdefault(_signature(profile), []).append(i)
    for members in groups.values():
        group = [profiles[i] for i in members]
        names = list(group[0]["detectors"])
        fresh = {i: new_detectors(profiles[i]) for i in members if not (states[i] and set(names) <= set(states[i]))}
        arrays = {name: array_from_dicts([(states[i] or {}).get(name) or fresh[i][name].to_dict() for i in members])
                  for name in names}
        standardisers = stack_standardisers(group)
        width = inputs[members[0]].feat.shape[1]
        where = [{day: t for t, day in enumerate(inputs[i].days)} for i in members]
        for day in sorted(set().union(*(w.keys() for w in where))):
            ret, err = np.full(len(members), np.nan), np.full(len(members), np.nan)
            feat, prev = np.full((len(members), width), np.nan), np.full((len(members), width), np.nan)
            present = []
            for g, (i, w) in enumerate(zip(members, where)):
                t = w.get(day)
                if t is not None:
                    present.append(g)
                    ret[g], err[g], feat[g], prev[g] = (inputs[i].ret[t], inputs[i].err[t], inputs[i].feat[t],
                                                        inputs[i].prev[t])
            u = innovations_many(group, ret, err, feat, prev, standardisers)
            today = {}
            for name, array in arrays.items():
                array.update(u[name], day=day)
                today[name] = dicts_from_array(array)
            for g in present:
                i = members[g]
                for name in names:
                    state = today[name][g]
                    alarm = state["alarm"] if state["alarm"] is not None and state["last_alarm_day"] == day else None
                    statistic, threshold = ((alarm["statistic"], alarm["threshold"]) if alarm else _leading(state))
                    out[i].append({"detector": name, "as_of": day, "state_json": _dumps(state),
                                   "statistic": float(statistic), "threshold": float(threshold),
                                   "alarm": int(alarm is not None), "onset_day": alarm["onset_day"] if alarm else None})
                out[i].append(_range_row(profiles[i], inputs[i].values[where[g][day]], day))
    return out


# --- stored state -------------------------------------------------------------------------------------

def last_states(model_id: str, db: sqlite_utils.Database | None = None) -> tuple[str | None, dict[str, dict]]:
    """(last stored day, detector -> state dict on that day) of `model_id`; (None, {}) before its first day."""
    db = db or get_db()
    rows = db.execute("SELECT detector, as_of, state_json FROM drift_watch_state WHERE model_id = ? AND as_of = "
                      "(SELECT MAX(as_of) FROM drift_watch_state WHERE model_id = ?)", [model_id, model_id]).fetchall()
    if not rows:
        return None, {}
    return rows[0][1], {detector: json.loads(state) for detector, _, state in rows if detector != RANGE}


def update(model_ids: Sequence[str] | None = None, day: Any = None, db: sqlite_utils.Database | None = None
           ) -> dict[str, int]:
    """Advance the given models (default: every deployed model) to `day` (default: each ticker's last data day);
    returns model_id -> days stored now. Idempotent: it starts after the last stored day, and the insert ignores
    a (model, detector, day) already there. Never stores a day inside the training window or beyond the data.
    The profile of a model without one is fitted first (`ensure_profile`)."""
    db = db or get_db()
    models = list_models(status="deployed", db=db) if model_ids is None else [get_model(m, db=db) for m in model_ids]
    chosen, profiles, states, inputs = [], [], [], []
    for model in models:
        if day is not None and _day(day) <= str(model["train_end"])[:10]:
            continue
        last, state = last_states(model["model_id"], db)
        after = max(last or "", str(model["train_end"])[:10])
        try:
            profile = ensure_profile(model["model_id"], db)
            data = day_inputs(model, profile, after, day, db)
        except MarketDataError as exc:
            log.warning("%s: drift watch skipped (%s)", model["model_id"], exc)
            continue
        chosen.append(model["model_id"])
        profiles.append(profile)
        states.append(state)
        inputs.append(data)
    rows = advance(profiles, states, inputs)
    with transaction(db):
        for model_id, model_rows in zip(chosen, rows):
            db["drift_watch_state"].insert_all(({"model_id": model_id, **r} for r in model_rows),
                                               pk=("model_id", "detector", "as_of"), ignore=True)
    return {model_id: len(data.days) for model_id, data in zip(chosen, inputs)}


def replay(model_id: str, start: Any = None, end: Any = None, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """The detectors recomputed from the day after training to `end` from the stored profile, nothing stored;
    the rows of [start, end] as `history(..., with_state=True)` gives them (equal to what `update` stored)."""
    db = db or get_db()
    model = get_model(model_id, db=db)
    profile = ensure_profile(model_id, db)
    data = day_inputs(model, profile, str(model["train_end"])[:10], end, db)
    rows = advance([profile], [None], [data])[0]
    return _history_frame(pd.DataFrame(rows), start, end, with_state=True)


def _history_frame(frame: pd.DataFrame, start: Any, end: Any, with_state: bool) -> pd.DataFrame:
    columns = HISTORY_COLUMNS + (["state_json"] if with_state else [])
    if frame.empty:
        return pd.DataFrame(columns=columns)
    if start is not None:
        frame = frame[frame["as_of"] >= _day(start)]
    if end is not None:
        frame = frame[frame["as_of"] <= _day(end)]
    frame = frame.sort_values(["as_of", "detector"]).reset_index(drop=True)
    frame["as_of"] = pd.to_datetime(frame["as_of"])
    frame["signal"] = frame["detector"].map(_signal)
    frame["ratio"] = frame["statistic"] / frame["threshold"]
    frame["alarm"] = frame["alarm"].astype(bool)
    frame["onset_day"] = frame["onset_day"].where(frame["onset_day"].notna(), None)
    return frame[columns]


def history(model_id: str, db: sqlite_utils.Database | None = None, start: Any = None, end: Any = None,
            with_state: bool = False) -> pd.DataFrame:
    """Stored rows of `model_id`, oldest first: as_of, detector, signal, statistic, threshold, ratio (statistic /
    threshold: the alarm comes at 1), alarm, onset_day (on alarm days) [, state_json]."""
    db = db or get_db()
    state = ", state_json" if with_state else ""
    frame = pd.read_sql_query(f"SELECT as_of, detector, statistic, threshold, alarm, onset_day{state} "
                              "FROM drift_watch_state WHERE model_id = ? ORDER BY as_of, detector", db.conn,
                              params=[model_id])
    return _history_frame(frame, start, end, with_state)


# --- alarms, episodes, words ----------------------------------------------------------------------------

def _alarm_record(detector: str, state_json: str, day: str) -> dict:
    state = json.loads(state_json)
    if detector == RANGE:
        record = max(state["outside"], key=lambda r: r["statistic"])
        return record | {"n_features": len(state["outside"])}
    return alarm_records({detector: state}, as_of=day)[0]


def episodes(model_id: str, db: sqlite_utils.Database | None = None, end: Any = None) -> list[dict]:
    """Every alarm episode of `model_id` up to `end`, oldest first: the latest alarm's record (detector,
    signal, stream, direction, statistic, threshold, drift) with onset_day = the episode's onset, plus
    first_alarm_day, alarm_day (the latest), n_alarms, delay_days (onset to first alarm, 1 = the same day),
    days_since_onset (to the latest alarm). Stored days are consecutive trading days, so day
    distances are counted on them."""
    db = db or get_db()
    where, params = ("AND as_of <= ?", [_day(end)]) if end is not None else ("", [])
    days = [r[0] for r in db.execute(f"SELECT DISTINCT as_of FROM drift_watch_state WHERE model_id = ? {where} "
                                     "ORDER BY as_of", [model_id, *params]).fetchall()]
    rank = {d: i for i, d in enumerate(days)}
    rows = db.execute(f"SELECT detector, as_of, state_json FROM drift_watch_state WHERE model_id = ? AND alarm = 1 "
                      f"{where} ORDER BY as_of, detector", [model_id, *params]).fetchall()
    open_: dict[tuple[str, str], dict] = {}
    found: list[dict] = []
    for detector, day, state_json in rows:
        record = _alarm_record(detector, state_json, day)
        onset = record["onset_day"] or day
        key = (detector, record["direction"])
        episode = open_.get(key)
        if episode is None or rank.get(onset, rank[day]) - rank[episode["alarm_day"]] > HOLD_DAYS:
            episode = {"onset_day": onset, "first_alarm_day": day, "n_alarms": 0}
            open_[key] = episode
            found.append(episode)
        first = {k: episode[k] for k in ("onset_day", "first_alarm_day")}
        episode.update(record | first | {"detector": detector, "alarm_day": day, "n_alarms": episode["n_alarms"] + 1,
                                         "signal": _signal(detector)})
    for episode in found:
        episode["days_since_onset"] = rank[episode["alarm_day"]] - rank.get(episode["onset_day"], 0) + 1
        episode["delay_days"] = rank[episode["first_alarm_day"]] - rank.get(episode["onset_day"], 0) + 1
        episode.pop("onset_index", None)
    return sorted(found, key=lambda e: (e["alarm_day"], e["detector"]))


def alarms(model_id: str, as_of: Any = None, db: sqlite_utils.Database | None = None) -> list[dict]:
    """The alarm episodes current on `as_of` (default: the last stored day): their latest alarm fell on one of
    the last `HOLD_DAYS` trading days of the ticker up to `as_of`. [] when the model has no stored state."""
    db = db or get_db()
    found = episodes(model_id, db, end=as_of)
    if not found:
        return []
    as_of = _day(as_of) if as_of is not None else history_end(model_id, db)
    calendar = load_prices(get_model(model_id, db=db)["symbol"], end=as_of, db=db).index[-HOLD_DAYS:]
    since = _day(calendar[0]) if len(calendar) else as_of
    return [e | {"as_of": as_of, "reason": reason(e)} for e in found if since <= e["alarm_day"] <= as_of]


def history_end(model_id: str, db: sqlite_utils.Database | None = None) -> str | None:
    db = db or get_db()
    return db.execute("SELECT MAX(as_of) FROM drift_watch_state WHERE model_id = ?", [model_id]).fetchone()[0]
