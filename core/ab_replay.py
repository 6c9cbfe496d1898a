"""Replaying an A/B test: historical days sent through the real serving path while the test runs.

Each replayed day is one request to `core.predict.predict`, which routes it to an arm and logs it
(the serving path owns `predictions`); this module writes no table itself. It sits above
`core.abtest` (it reads the experiment) so the storage module stays free of the replay.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import sqlite_utils

from core.ab_analysis import first_scored_day
from core.ab_stats import ExperimentError
from core.ab_validation import iso_day, verify_arms
from core.abtest import get_experiment
from core.market import load_prices
from core.predict import backfill_actuals, predict
from core.registry import get_model, model_kind
from core.store import get_db

log = logging.getLogger(__name__)


def replay_bounds(experiment: Mapping, db: sqlite_utils.Database | None = None) -> tuple[str, str]:
    """(first, last) day a replay of `experiment` may cover: its own dates, from the first day every
    arm can be scored on, up to the last day with prices."""
    db = db or get_db()
    last_data = iso_day(load_prices(experiment["symbol"], db=db).index[-1])
    return max(experiment["start_date"], first_scored_day(experiment, db)), min(experiment["end_date"], last_data)


def simulate(experiment_id: int, start, end, db: sqlite_utils.Database | None = None) -> int:
    """Replay the trading days in [start, end] through the serving path while the experiment runs.

    Each day is one request (`predict` routes it to an arm and logs it once: a day already replayed
    returns its logged row, so replaying again changes nothing); actuals are back-filled at the end.
    Returns the number of days newly logged (0 when every day had been served already). Refused, before anything is written: days outside the
    test's dates or inside an arm's training window (they would score a model on the data it was
    trained on), and arms whose artifacts do not verify.
    """
    db = db or get_db()
    experiment = get_experiment(experiment_id, db=db)
    if experiment["status"] != "running":
        raise ExperimentError(f"Experiment {experiment['name']} is {experiment['status']}: only a running test can be replayed.")
    first, last = replay_bounds(experiment, db=db)
    lo, hi = iso_day(start), iso_day(end)
    if lo > hi:
        raise ExperimentError(f"The replay starts ({lo}) after it ends ({hi}).")
    if first > last:
        raise ExperimentError(f"Experiment {experiment['name']} has no day that can be replayed: its arms are trained up "
                              f"to {first}, after its last day with data {last}.")
    if lo < first or hi > last:
        why = (f"the test runs {experiment['start_date']} to {experiment['end_date']}"
               + (f" and its arms were trained on the closes up to {first}" if first > experiment["start_date"] else "")
               + (f"; prices end on {last}" if last < experiment["end_date"] else ""))
        raise ExperimentError(f"Replay {lo} to {hi} is refused: {why}. The first allowed day is {first}, the last {last}.")
    verify_arms([(a["arm"], a["model_id"]) for a in experiment["arms"]], db)
    days = load_prices(experiment["symbol"], start=lo, end=hi, db=db).index
    before = db.execute("SELECT COALESCE(MAX(id), 0) FROM predictions").fetchone()[0]
    kind = model_kind(get_model(experiment["arms"][0]["model_id"], db=db)["model_type"])  # a direction test: P(up) requests
    logged = sum(predict(experiment["symbol"], day, db=db, kind=kind).prediction_id > before for day in days)  # new rows only
    backfill_actuals(days[-1], symbol=experiment["symbol"], db=db)
    log.info("experiment %d: replayed %s..%s, %d of %d days newly logged", experiment["id"], iso_day(days[0]),
             iso_day(days[-1]), logged, len(days))
    return logged


