"""Time one day of `core.drift_watch.update` for many models on a scratch database, and weigh what it stores.
Goal (issue 13): < 1 s end to end for 1,000 models.

Setup (not timed): a throwaway database; one naive model registered on ^GSPC, its drift profile fitted
(`ensure_profile`, the real calibration), then cloned into N model rows with the same profile and ticker (SQL
copies: the bench measures the daily update, not N trainings), each with a forecast logged for the day before.
All clones are advanced to the day before (state stored). Then one day is timed:

- `update(ids, day)` end to end: N profiles and resume points read in one query each, the ticker's prices read
  once and its features built once, the N forecasts in one query, the vectorised step, N x 5 compact rows
  and N packed states written in one transaction;
- its parts: the batched reads next to the reference, the same inputs read one model at a time
  (`watch_inputs.day_inputs` per model, as `update` did before); the vectorised step (`advance`) next to the
  same day one model at a time;
- storage: bytes on disk (SQLite's dbstat: the table and its indexes) added by one more day of N models, and
  the bytes of the one row per model that holds the full state to resume from.

    python bench/watch_bench.py [--models 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["MLSA_OFFLINE"] = "1"
_TMP = Path(tempfile.mkdtemp(prefix="mlsa-watch-bench-"))
os.environ["MLSA_DB_PATH"] = str(_TMP / "app.db")
os.environ["MLSA_MODELS_DIR"] = str(_TMP / "models")

import numpy as np  # noqa: E402

from core import drift_watch, watch_inputs, watch_step  # noqa: E402
from core.market import load_prices  # noqa: E402
from core.registry import get_model, register  # noqa: E402
from core.sequential import innovations_many, stack_standardisers  # noqa: E402
from core.store import get_db  # noqa: E402
from core.training import train_model  # noqa: E402

SYMBOL = "^GSPC"


def setup(n_models: int) -> tuple[list[str], str, str, str]:
    db = get_db()
    days = [f"{d:%Y-%m-%d}" for d in load_prices(SYMBOL).index]
    train_end, before, day, after = days[-40], days[-3], days[-2], days[-1]
    template = register(train_model(SYMBOL, "naive", train_end=train_end), reason="bench", actor="bench")
    profile_json = json.dumps(drift_watch.ensure_profile(template, db), sort_keys=True, separators=(",", ":"))
    columns = [c for c in db["models"].columns_dict if c not in ("model_id", "version", "train_end", "status")]
    ids = [f"bench_{i:05d}" for i in range(n_models)]
    close = load_prices(SYMBOL)["close"]
    with db.conn:
        for i, model_id in enumerate(ids):
            db.conn.execute(f"INSERT INTO models (model_id, version, train_end, status, {', '.join(columns)}) "
                            f"SELECT ?, ?, ?, 'candidate', {', '.join(columns)} FROM models WHERE model_id = ?",
                            [model_id, 1000 + i, days[-5], template])
            db.conn.execute("INSERT INTO drift_profiles (model_id, profile_json, arl_days, created_at) "
                            "VALUES (?, ?, 250, 'bench')", [model_id, profile_json])
            for made, target in ((days[-5], days[-4]), (days[-4], before), (before, day)):
                db.conn.execute("INSERT INTO predictions (model_id, symbol, as_of, target_date, predicted_close, "
                                "last_close, latency_ms, served, created_at) VALUES (?, ?, ?, ?, ?, ?, 1, 1, 'bench')",
                                [model_id, SYMBOL, made, target, float(close[made]) * (1 + 0.001 * (i % 7)),
                                 float(close[made])])
    drift_watch.update(ids, before, db=db)
    return ids, before, day, after


def table_bytes(db, table: str = "drift_watch_state") -> int:
    """Bytes of `table` and its indexes in the database file (SQLite's dbstat: whole pages)."""
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE tbl_name = ?", [table]).fetchall()]
    marks = ", ".join("?" for _ in names)
    return int(db.execute(f"SELECT SUM(pgsize) FROM dbstat WHERE name IN ({marks})", names).fetchone()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    ids, before, day, after = setup(args.models)
    db = get_db()
    print(f"setup: {args.models} models on {SYMBOL} advanced to {before} in {time.perf_counter() - started:.1f} s "
          f"(scratch database {_TMP})")

    # the reads as `update` does them (batched), and the reference: the same inputs one model at a time
    reads = []
    for _ in range(3):
        started = time.perf_counter()
        batch = drift_watch.read_batch(ids, day, db)
        reads.append(time.perf_counter() - started)
    assert batch.ids == ids and all(x.days == [day] for x in batch.inputs)
    profiles, states, inputs = batch.profiles, batch.states, batch.inputs
    models = [get_model(m, db=db) for m in ids]
    started = time.perf_counter()
    single_inputs = [watch_inputs.day_inputs(m, p, before, day, db) for m, p in zip(models, profiles)]
    reads_single = time.perf_counter() - started
    assert all(a.days == b.days and all(np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True)
                                        for k in ("ret", "err", "feat", "prev", "values"))
               for a, b in zip(inputs, single_inputs)), "batched and one-at-a-time reads differ"
    # the statistics alone: one day's innovations for all N and one CusumArray step per detector
    standardisers = stack_standardisers(profiles)
    ret, err = np.array([x.ret[0] for x in inputs]), np.array([x.err[0] for x in inputs])
    feat, prev = np.array([x.feat[0] for x in inputs]), np.array([x.prev[0] for x in inputs])
    stats_timings = []
    for _ in range(5):
        arrays = watch_step.unpack(profiles, states)
        started = time.perf_counter()
        u = innovations_many(profiles, ret, err, feat, prev, standardisers)
        for name, array in arrays.items():
            array.update(u[name], day=day)
        stats_timings.append(time.perf_counter() - started)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        advanced = watch_step.advance(profiles, states, inputs)
        timings.append(time.perf_counter() - started)
    vectorised = float(np.median(timings))
    started = time.perf_counter()
    single = [watch_step.advance([p], [s], [x])[0] for p, s, x in zip(profiles, states, inputs)]
    loop = time.perf_counter() - started
    assert single == advanced, "vectorised and one-at-a-time steps differ"

    started = time.perf_counter()
    stored = drift_watch.update(ids, day, db=db)
    total = time.perf_counter() - started
    assert set(stored.values()) == {1}
    n_rows = db.execute("SELECT COUNT(*) FROM drift_watch_state WHERE as_of = ?", [day]).fetchone()[0]
    size_before = table_bytes(db)
    started = time.perf_counter()
    assert set(drift_watch.update(ids, after, db=db).values()) == {1}  # one more day on top
    total_next = time.perf_counter() - started
    grown = (table_bytes(db) - size_before) / args.models
    resume = table_bytes(db, "drift_watch_resume") / args.models
    detail = db.execute("SELECT AVG(LENGTH(COALESCE(state_json, ''))) * 5 FROM drift_watch_state WHERE as_of = ?",
                        [after]).fetchone()[0]
    print(f"one day ({day}) for {args.models} models:")
    print(f"  update() end to end: {1000 * total:.0f} ms (goal < 1000 ms; the next day, {after}: "
          f"{1000 * total_next:.0f} ms); {n_rows} rows written")
    print(f"  reads (models, profiles, resume points, prices once per ticker, features once per anchor, forecasts "
          f"in one query): {1000 * float(np.median(reads)):.0f} ms; the same inputs one model at a time: "
          f"{1000 * reads_single:.0f} ms ({reads_single / float(np.median(reads)):.0f}x)")
    print(f"  vectorised step (advance: statistics, compact rows, final states): {1000 * vectorised:.0f} ms; "
          f"one model at a time: {1000 * loop:.0f} ms ({loop / vectorised:.1f}x); the statistics alone "
          f"(innovations_many + one CusumArray.update per detector): {1000 * float(np.median(stats_timings)):.1f} ms")
    print(f"  storage: one more day adds {grown:.0f} bytes per model on disk (drift_watch_state and its indexes, "
          f"dbstat), of which state_json {detail:.0f} bytes (alarm details only); the full state to resume from: "
          f"{resume:.0f} bytes per model (drift_watch_resume, rewritten in place, not per day)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
