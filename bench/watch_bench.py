"""Time one day of `core.drift_watch.update` for many models on a scratch database. Goal: the vectorised part < 1 s
for 1,000 models (issue 13).

Setup (not timed): a throwaway database; one naive model registered on ^GSPC, its drift profile fitted
(`ensure_profile`, the real calibration), then cloned into N model rows with the same profile and ticker (SQL
copies: the bench measures the daily update, not N trainings), each with a forecast logged for the day before.
All clones are advanced to the day before (state stored). Then one day is timed:

- `update(ids, day)` end to end: read N profiles and last states, read each model's inputs (prices from the
  anchor, features, its forecast), the vectorised step, N x 5 rows written in one transaction;
- the vectorised part alone (`advance` on the same inputs: one `innovations_many` and one `CusumArray.update`
  per detector for all N, states to JSON-ready dicts), and the reference: the same day one model at a time.

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

from core import drift_watch  # noqa: E402
from core.market import load_prices  # noqa: E402
from core.registry import get_model, register  # noqa: E402
from core.sequential import innovations_many, stack_standardisers  # noqa: E402
from core.store import get_db  # noqa: E402
from core.training import train_model  # noqa: E402

SYMBOL = "^GSPC"


def setup(n_models: int) -> tuple[list[str], str, str]:
    db = get_db()
    days = [f"{d:%Y-%m-%d}" for d in load_prices(SYMBOL).index]
    train_end, before, day = days[-40], days[-3], days[-2]
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
    return ids, before, day


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    ids, before, day = setup(args.models)
    db = get_db()
    print(f"setup: {args.models} models on {SYMBOL} advanced to {before} in {time.perf_counter() - started:.1f} s "
          f"(scratch database {_TMP})")

    # inputs as `update` reads them (timed separately), then the vectorised step alone, then the reference loop
    started = time.perf_counter()
    models = [get_model(m, db=db) for m in ids]
    profiles = [drift_watch.ensure_profile(m, db) for m in ids]
    states = [drift_watch.last_states(m, db)[1] for m in ids]
    inputs = [drift_watch.day_inputs(m, p, before, day, db) for m, p in zip(models, profiles)]
    reads = time.perf_counter() - started
    # the statistics alone: one day's innovations for all N and one CusumArray step per detector
    standardisers = stack_standardisers(profiles)
    ret, err = np.array([x.ret[0] for x in inputs]), np.array([x.err[0] for x in inputs])
    feat, prev = np.array([x.feat[0] for x in inputs]), np.array([x.prev[0] for x in inputs])
    stats_timings, stack_timings = [], []
    for _ in range(5):
        arrays = {name: drift_watch.array_from_dicts([s[name] for s in states]) for name in states[0]}
        started = time.perf_counter()
        u = innovations_many(profiles, ret, err, feat, prev, standardisers)
        for name, array in arrays.items():
            array.update(u[name], day=day)
        stats_timings.append(time.perf_counter() - started)
        started = time.perf_counter()
        stack_standardisers(profiles)
        stack_timings.append(time.perf_counter() - started)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        rows = drift_watch.advance(profiles, states, inputs)
        timings.append(time.perf_counter() - started)
    vectorised = float(np.median(timings))
    started = time.perf_counter()
    single = [drift_watch.advance([p], [s], [x])[0] for p, s, x in zip(profiles, states, inputs)]
    loop = time.perf_counter() - started
    assert single == rows, "vectorised and one-at-a-time steps differ"

    started = time.perf_counter()
    stored = drift_watch.update(ids, day, db=db)
    total = time.perf_counter() - started
    assert set(stored.values()) == {1}
    n_rows = db.execute("SELECT COUNT(*) FROM drift_watch_state WHERE as_of = ?", [day]).fetchone()[0]
    size = db.execute("SELECT AVG(LENGTH(state_json)) * 5 FROM drift_watch_state WHERE as_of = ?", [day]).fetchone()[0]
    print(f"one day ({day}) for {args.models} models:")
    print(f"  statistics (innovations_many + one CusumArray.update per detector): "
          f"{1000 * float(np.median(stats_timings)):.1f} ms; stacking the N profiles' standardisers: "
          f"{1000 * float(np.median(stack_timings)):.0f} ms")
    print(f"  vectorised step as update() runs it (advance: stacking, statistics, states to JSON rows): "
          f"{1000 * vectorised:.0f} ms (goal < 1000 ms); one model at a time: {1000 * loop:.0f} ms "
          f"({loop / vectorised:.1f}x)")
    print(f"  update() end to end: {total:.2f} s (reading profiles, states and each model's inputs alone: "
          f"{reads:.2f} s; {n_rows} rows written, ~{size / 1024:.1f} KB of state JSON per model-day)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
