"""Drift watch: the sequential detectors of each deployed model, a day at a time; owns `drift_profiles`,
`drift_watch_state` and `drift_watch_resume`.

The statistics are `core/sequential.py` (CUSUM banks, `fit_profile`) and `core/calibration.py` (thresholds
calibrated to `MLSA_DRIFT_ARL_DAYS`); `core/watch_step.py` advances many models at once (pure) and
`core/watch_inputs.py` reads their inputs in batches; this module gives them a memory and a place in the product:

- `ensure_profile(model_id)`: the model's calibrated profile (standardisers, thresholds, feature ranges),
  fitted once on its reference (training) window: the daily log returns, its walk-forward validation
  errors divided by their mean (a price model's |error| and MAE in log-return units, a direction model's
  log loss of P(up) and its mean: `core.watch_inputs.day_errors`) and its feature frame; stored in
  `drift_profiles`. Later calls read it (a changed `MLSA_DRIFT_ARL_DAYS` applies to models fitted after).
- `update(model_ids, day)`: advances every given model to `day` (default: the last day of its ticker's
  data), one trading day at a time in order, from the day after the last stored one (the first time: the
  day after `train_end`), so a gap is caught up and a day already stored is never applied twice. Each day
  the detectors see that day's log return, the error of the model's forecast made the trading day before
  (|log(predicted close / close)| / validation MAE, or a direction model's log loss / its validation mean;
  NaN when it made none: the error detector skips the
  day) and the change of its features since the day before; `feature_range` flags values far outside the
  training range. All models are read, advanced and written together (one transaction).
- `history`, `alarms`, `replay`: what the Drift page, `core/drift.py`'s verdict and alerts read.

Storage: one row per (model, detector, day) in `drift_watch_state` with the compact daily statistics (the
leading statistic and its threshold, the alarm flag, the onset; `state_json` holds the alarm's details on an
alarm day, else NULL), and one row per model in `drift_watch_resume`: the detectors' full state after its
latest stored day, packed (`core.watch_step.pack`), rewritten in place in the same transaction as the day's
rows. When it does not match the latest stored day (rows deleted, a database from before it), the days are
recomputed from `train_end`, which gives the same numbers (`replay`).

An alarm is *current* for `HOLD_DAYS` trading days (its own day included; `core.drift_stats.check_budget`
counts that stretch in a check's false-alarm budget: HOLD_DAYS / ARL). After an alarm a CUSUM starts
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

import pandas as pd
import sqlite_utils

from core.config import get_settings
from core.drift_report import RANGE, combine, in_words, reason, retrain_trigger  # noqa: F401 (alarms in words)
from core.drift_stats import HOLD_DAYS  # trading days an alarm stays current (its share of a check's budget)
from core.market import MarketDataError, PriceCache, load_prices
from core.registry import DEPLOYABLE_TYPES, get_model, list_models
from core.sequential import DETECTORS, fit_profile
from core.store import get_db, transaction, utc_now
from core.watch_inputs import day_inputs, day_inputs_many, day_text, reference_inputs
from core.watch_step import Advanced, DayInputs, advance, compact_detail, dumps, packed_size

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["as_of", "detector", "signal", "statistic", "threshold", "ratio", "alarm", "onset_day"]


_day = day_text


def _signal(detector: str) -> str:
    return DETECTORS[detector].signal if detector in DETECTORS else "values far outside the training range"


# --- profiles -----------------------------------------------------------------------------------------

def fit_model_profile(model: Mapping, db: sqlite_utils.Database | None = None) -> dict:
    """`core.sequential.fit_profile` on the model's reference window (0.1-0.5 s), plus `error_scale` (the
    validation mean error that live errors are divided by: MAE in log-return units, or mean log loss of a
    direction model). Computes, stores nothing."""
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
                   [model_id, dumps(profile), float(profile["arl_days"]), utc_now()])
    log.info("%s: drift profile fitted (ARL %.0f days, estimate %.0f)", model_id, profile["arl_days"], profile["arl_estimate"])
    return get_profile(model_id, db)  # as stored: every later day uses exactly these numbers


# --- stored state -------------------------------------------------------------------------------------

@dataclass
class Resume:
    """Where a model's detectors stand: its last stored day and, when `drift_watch_resume` holds the state after
    exactly that day, that state (`core.watch_step.pack`ed); else None and the days are recomputed."""

    last: str | None = None
    state: bytes | None = None


def resume_points(model_ids: Sequence[str], db: sqlite_utils.Database | None = None) -> dict[str, Resume]:
    """Per model its `Resume`, in one query (the latest stored day is one index seek per model)."""
    db = db or get_db()
    rows = db.execute("SELECT w.value, r.as_of, r.state, (SELECT MAX(as_of) FROM drift_watch_state "
                      "WHERE model_id = w.value) FROM json_each(?) AS w "
                      "LEFT JOIN drift_watch_resume AS r ON r.model_id = w.value", [dumps(list(model_ids))]).fetchall()
    return {model_id: Resume(last, state if as_of == last and last is not None else None)
            for model_id, as_of, state, last in rows}


def _profiles(model_ids: Sequence[str], db: sqlite_utils.Database) -> dict[str, dict]:
    """The stored profiles of the models in one query; a missing one is fitted and stored (`ensure_profile`)."""
    rows = db.execute("SELECT model_id, profile_json FROM drift_profiles WHERE model_id IN "
                      "(SELECT value FROM json_each(?))", [dumps(list(model_ids))]).fetchall()
    found = {model_id: json.loads(text) for model_id, text in rows}
    return {model_id: found.get(model_id) or ensure_profile(model_id, db) for model_id in model_ids}


def _models(model_ids: Sequence[str] | None, db: sqlite_utils.Database) -> list[dict]:
    """The models asked for (default: every deployed one); many are read in one query, not one each."""
    if model_ids is None:  # price and direction models: the same data detectors, each its own error detector
        return list_models(status="deployed", db=db, model_types=DEPLOYABLE_TYPES)
    if len(model_ids) <= 1:
        return [get_model(m, db=db) for m in model_ids]
    every = {m["model_id"]: m for m in list_models(db=db)}
    return [every[m] if m in every else get_model(m, db=db) for m in model_ids]  # get_model says which is missing


def _store_rows(model_id: str, point: Resume, advanced: Advanced) -> tuple[list[tuple], tuple | None]:
    """(daily rows to insert, the resume row) for one model's newly computed days (none: nothing new)."""
    new = [r for r in advanced.rows if point.last is None or r["as_of"] > point.last]
    if not new:
        return [], None
    inserts = [(model_id, r["detector"], r["as_of"], r["detail"], r["statistic"], r["threshold"], r["alarm"],
                r["onset_day"]) for r in new]
    return inserts, (model_id, new[-1]["as_of"], advanced.state)


@dataclass
class Batch:
    """What one update reads, for the models it will advance: each model's profile, resume point, the state to
    start from (None: fresh, from the day after training) and its day inputs."""

    ids: list[str]
    profiles: list[dict]
    points: list[Resume]
    states: list[bytes | None]
    inputs: list[DayInputs]


def read_batch(model_ids: Sequence[str] | None, day: Any, db: sqlite_utils.Database,
               cache: PriceCache | None = None) -> Batch:
    """The reads of `update`, batched: models, profiles and resume points one query each, prices once per ticker,
    features once per (ticker, anchor), forecasts in one query. A model whose data cannot be read is left out
    (logged with why); a latest day without its full state is recomputed from the training window's end."""
    models = [m for m in _models(model_ids, db) if day is None or _day(day) > str(m["train_end"])[:10]]
    ids = [m["model_id"] for m in models]
    profiles, points = _profiles(ids, db), resume_points(ids, db)
    resumes = [points[i].state is not None and len(points[i].state) == packed_size(profiles[i]) for i in ids]
    for model_id, resumed in zip(ids, resumes):
        if points[model_id].last and not resumed:
            log.warning("%s: no full detector state on %s; recomputing from the training window's end",
                        model_id, points[model_id].last)
    afters = [points[m["model_id"]].last if resumed else str(m["train_end"])[:10] for m, resumed in zip(models, resumes)]
    inputs = day_inputs_many(models, [profiles[i] for i in ids], afters, day, db, cache=cache)
    batch = Batch([], [], [], [], [])
    for model_id, resumed, found in zip(ids, resumes, inputs):
        if isinstance(found, MarketDataError):
            log.warning("%s: drift watch skipped (%s)", model_id, found)
            continue
        batch.ids.append(model_id)
        batch.profiles.append(profiles[model_id])
        batch.points.append(points[model_id])
        batch.states.append(points[model_id].state if resumed else None)
        batch.inputs.append(found)
    return batch


def update(model_ids: Sequence[str] | None = None, day: Any = None, db: sqlite_utils.Database | None = None,
           cache: PriceCache | None = None) -> dict[str, int]:
    """Advance the given models (default: every deployed model) to `day` (default: each ticker's last data day);
    returns model_id -> days stored now. Idempotent: it starts after the last stored day, and the insert ignores
    a (model, detector, day) already there. Never stores a day inside the training window or beyond the data.
    The profile of a model without one is fitted first (`ensure_profile`). The reads (`read_batch`), the
    vectorised step (`advance`) and the writes (one transaction, executemany) each run once for all the models."""
    db = db or get_db()
    batch = read_batch(model_ids, day, db, cache)  # cache: the daily cycle's PriceCache (prices read once)
    inserts, resumes, stored = [], [], {}
    for model_id, point, result in zip(batch.ids, batch.points, advance(batch.profiles, batch.states, batch.inputs)):
        rows, resume = _store_rows(model_id, point, result)
        inserts += rows
        resumes += [resume] if resume else []
        stored[model_id] = len({row[2] for row in rows})
    with transaction(db):
        db.conn.executemany("INSERT OR IGNORE INTO drift_watch_state (model_id, detector, as_of, state_json, "
                            "statistic, threshold, alarm, onset_day) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", inserts)
        db.conn.executemany("INSERT INTO drift_watch_resume (model_id, as_of, state) VALUES (?, ?, ?) ON CONFLICT "
                            "(model_id) DO UPDATE SET as_of = excluded.as_of, state = excluded.state", resumes)
    return stored


def replay(model_id: str, start: Any = None, end: Any = None, db: sqlite_utils.Database | None = None,
           with_state: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, bytes | None]:
    """The detectors recomputed from the day after training to `end` from the stored profile, nothing stored;
    the rows of [start, end] as `history(..., with_detail=True)` gives them (equal to what `update` stored);
    with_state: also the detectors' packed state after `end` (equal to what a restart resumes from)."""
    db = db or get_db()
    model = get_model(model_id, db=db)
    profile = ensure_profile(model_id, db)
    data = day_inputs(model, profile, str(model["train_end"])[:10], end, db)
    [result] = advance([profile], [None], [data])
    frame = pd.DataFrame(result.rows).rename(columns={"detail": "state_json"})
    frame = _history_frame(frame, start, end, with_detail=True)
    return (frame, result.state) if with_state else frame


def _history_frame(frame: pd.DataFrame, start: Any, end: Any, with_detail: bool) -> pd.DataFrame:
    columns = HISTORY_COLUMNS + (["detail"] if with_detail else [])
    if frame.empty:
        return pd.DataFrame(columns=columns)
    if start is not None:
        frame = frame[frame["as_of"] >= _day(start)]
    if end is not None:
        frame = frame[frame["as_of"] <= _day(end)]
    frame = frame.sort_values(["as_of", "detector"]).reset_index(drop=True)
    if with_detail:
        frame["detail"] = [compact_detail(d, a, t) for d, a, t in zip(frame["detector"], frame["alarm"],
                                                                         frame["state_json"])]
    frame["as_of"] = pd.to_datetime(frame["as_of"])
    frame["signal"] = frame["detector"].map(_signal)
    frame["ratio"] = frame["statistic"] / frame["threshold"]
    frame["alarm"] = frame["alarm"].astype(bool)
    frame["onset_day"] = frame["onset_day"].where(frame["onset_day"].notna(), None)
    return frame[columns]


def history(model_id: str, db: sqlite_utils.Database | None = None, start: Any = None, end: Any = None,
            with_detail: bool = False) -> pd.DataFrame:
    """Stored rows of `model_id`, oldest first: as_of, detector, signal, statistic, threshold, ratio (statistic /
    threshold: the alarm comes at 1), alarm, onset_day (on alarm days) [, detail: the alarm's JSON on alarm days]."""
    db = db or get_db()
    state = ", state_json" if with_detail else ""
    frame = pd.read_sql_query(f"SELECT as_of, detector, statistic, threshold, alarm, onset_day{state} "
                              "FROM drift_watch_state WHERE model_id = ? ORDER BY as_of, detector", db.conn,
                              params=[model_id])
    return _history_frame(frame, start, end, with_detail)


# --- alarms, episodes, words ----------------------------------------------------------------------------

def _alarm_record(detector: str, state_json: str, day: str) -> dict:
    """The record of an alarm from its stored details (compact, or the full state on the latest day)."""
    state = json.loads(state_json)
    if detector == RANGE:
        record = max(state["outside"], key=lambda r: r["statistic"])
        return record | {"n_features": len(state["outside"])}
    alarm = state["alarm"] if "stat" in state else state
    return {"detector": detector, "signal": _signal(detector), "stream": alarm["stream"],
            "direction": alarm["direction"], "statistic": alarm["statistic"], "threshold": alarm["threshold"],
            "drift": alarm["drift"], "onset_day": alarm["onset_day"], "as_of": day}


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
    return sorted(found, key=lambda e: (e["alarm_day"], e["detector"]))


def alarms(model_id: str, as_of: Any = None, db: sqlite_utils.Database | None = None,
           cache: PriceCache | None = None) -> list[dict]:
    """The alarm episodes current on `as_of` (default: the last stored day): their latest alarm fell on one of
    the last `HOLD_DAYS` trading days of the ticker up to `as_of`. [] when the model has no stored state."""
    db = db or get_db()
    found = episodes(model_id, db, end=as_of)
    if not found:
        return []
    as_of = _day(as_of) if as_of is not None else history_end(model_id, db)
    calendar = load_prices(get_model(model_id, db=db)["symbol"], end=as_of, db=db, cache=cache).index[-HOLD_DAYS:]
    since = _day(calendar[0]) if len(calendar) else as_of
    return [e | {"as_of": as_of, "reason": reason(e)} for e in found if since <= e["alarm_day"] <= as_of]


def history_end(model_id: str, db: sqlite_utils.Database | None = None) -> str | None:
    db = db or get_db()
    return db.execute("SELECT MAX(as_of) FROM drift_watch_state WHERE model_id = ?", [model_id]).fetchone()[0]
