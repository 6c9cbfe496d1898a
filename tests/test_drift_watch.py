"""The sequential detectors in the product (core/drift_watch.py): stored profiles, daily state that is idempotent,
survives a restart and equals a replay, alarms with the right onset, and what the verdict, alerts and the Drift
page make of them. Real SQLite: a copy of the session's demo registry (its daily cycles already stored state)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import page_app



def _model(db, symbol: str = "AAPL") -> dict:
    from core.registry import deployed_model

    return deployed_model(symbol, db=db)


def _days_after(symbol: str, day: str, db) -> list[str]:
    from core.market import load_prices

    index = load_prices(symbol, start=day, db=db).index
    return [f"{d:%Y-%m-%d}" for d in index if f"{d:%Y-%m-%d}" > day]


def _rows(db, model_id: str) -> pd.DataFrame:
    return pd.read_sql_query("SELECT * FROM drift_watch_state WHERE model_id = ? ORDER BY as_of, detector", db.conn,
                             params=[model_id])


def _log_forecasts(db, model: dict, errors: dict[str, float]) -> None:
    """Log the model's forecast made the trading day before each day, |log(predicted / close)| = multiple x the
    profile's validation MAE (test setup: written straight into the prediction log)."""
    from core import drift_watch
    from core.market import load_prices

    scale = drift_watch.ensure_profile(model["model_id"], db)["error_scale"]
    close = load_prices(model["symbol"], db=db)["close"]
    days = [f"{d:%Y-%m-%d}" for d in close.index]
    with db.conn:
        for day, multiple in errors.items():
            before = days[days.index(day) - 1]
            predicted = float(close[day] * np.exp(multiple * scale))
            db.conn.execute("INSERT INTO predictions (model_id, symbol, as_of, target_date, predicted_close, lower, upper, "
                            "last_close, latency_ms, served, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1.0, 1, 'test')",
                            [model["model_id"], model["symbol"], before, day, predicted, predicted * 0.98,
                             predicted * 1.02, float(close[before])])


@pytest.fixture()
def error_jump(registry_copy):
    """AAPL's deployed model: five days with exact forecasts, then its error jumps to 4 validation MAEs on `onset`;
    the detectors are advanced day by day until the error detector alarms. Returns (db, model, onset, alarm day, days)."""
    from core import drift_watch

    db = registry_copy
    model = _model(db)
    last = drift_watch.history_end(model["model_id"], db)
    days = _days_after(model["symbol"], last, db)[:30]
    onset = days[6]
    _log_forecasts(db, model, {d: (0.0 if d < onset else 4.0) for d in days[1:]})
    alarm_day = None
    for day in days[:17]:
        drift_watch.update([model["model_id"]], day, db=db)
        rows = _rows(db, model["model_id"])
        if rows[(rows["as_of"] == day) & (rows["detector"] == "error")]["alarm"].iloc[0]:
            alarm_day = day
            break
    return db, model, onset, alarm_day, days


def test_profile_is_fitted_once_and_stored(registry_copy, monkeypatch):
    from core import drift_watch
    from core.registry import list_models

    db = registry_copy
    model = _model(db)
    stored = drift_watch.get_profile(model["model_id"], db)  # the demo's first cycle fitted it
    assert stored is not None and set(stored["detectors"]) == {"returns_mean", "returns_variance", "error", "feature_scale"}
    assert stored["arl_days"] == 250 and stored["error_scale"] > 0
    assert all(len(d["thresholds"]) == len(d["drifts"]) for d in stored["detectors"].values())
    challenger = next(m for m in list_models("AAPL", db=db) if m["status"] != "deployed")
    assert drift_watch.get_profile(challenger["model_id"], db) is None
    fitted = drift_watch.ensure_profile(challenger["model_id"], db)

    def refit(*_args, **_kwargs):
        raise AssertionError("a stored profile is never fitted again")

    monkeypatch.setattr(drift_watch, "fit_model_profile", refit)
    assert drift_watch.ensure_profile(challenger["model_id"], db) == fitted
    assert drift_watch.ensure_profile(model["model_id"], db) == stored
    count = db.execute("SELECT COUNT(*) FROM drift_profiles WHERE model_id IN (?, ?)",
                       [model["model_id"], challenger["model_id"]]).fetchone()[0]
    assert count == 2


def test_demo_cycles_stored_state_that_a_replay_reproduces(registry_copy):
    from core import drift_watch

    db = registry_copy
    for symbol in ("AAPL", "MSFT"):
        model = _model(db, symbol)
        stored = drift_watch.history(model["model_id"], db, with_detail=True)
        first, last = stored["as_of"].min(), stored["as_of"].max()
        assert f"{first:%Y-%m-%d}" > model["train_end"] and stored.groupby("as_of").size().eq(5).all()
        replayed, state = drift_watch.replay(model["model_id"], end=last, db=db, with_state=True)
        pd.testing.assert_frame_equal(replayed, stored)
        assert drift_watch.resume_points([model["model_id"]], db)[model["model_id"]].state == state


def test_state_is_stored_compactly_and_resumes_exactly(registry_copy):
    """Daily rows keep the statistics and, on alarm days only, the alarm's details; the full state lives in one
    row per model (drift_watch_resume) for the latest day, equal to what a replay of those days ends with."""
    from core import drift_watch
    from core.watch_step import packed_size

    db = registry_copy
    detail = pd.read_sql_query("SELECT detector, alarm, state_json FROM drift_watch_state", db.conn)
    assert len(detail) and detail.loc[detail["alarm"] == 0, "state_json"].isna().all()
    for text in detail.loc[detail["alarm"] == 1, "state_json"]:
        assert '"stat"' not in text and ('"onset_day"' in text or '"outside"' in text)
    resumes = pd.read_sql_query("SELECT model_id, as_of, state FROM drift_watch_resume", db.conn)
    assert len(resumes) == db.execute("SELECT COUNT(DISTINCT model_id) FROM drift_watch_state").fetchone()[0] >= 2
    for model_id, as_of, state in resumes.itertuples(index=False):
        assert as_of == drift_watch.history_end(model_id, db)
        assert len(state) == packed_size(drift_watch.get_profile(model_id, db))
        assert drift_watch.replay(model_id, end=as_of, db=db, with_state=True)[1] == state


def test_update_is_idempotent_and_a_restart_resumes_to_the_same_states(registry_copy):
    from core import drift_watch
    from core.store import close_all, get_db

    db = registry_copy
    model = _model(db)
    model_id = model["model_id"]
    days = _days_after(model["symbol"], drift_watch.history_end(model_id, db), db)[:12]
    _log_forecasts(db, model, {d: 1.0 for d in days[1:]})
    for day in days[:6]:
        assert drift_watch.update([model_id], day, db=db) == {model_id: 1}
    assert drift_watch.update([model_id], days[5], db=db) == {model_id: 0}  # the same day again: nothing applied
    before = len(_rows(db, model_id))
    drift_watch.update([model_id], days[3], db=db)  # an older day: nothing either
    assert len(_rows(db, model_id)) == before
    close_all()  # "restart": a new connection resumes from the last stored day
    db = get_db()
    assert drift_watch.update([model_id], days[-1], db=db) == {model_id: 6}  # the gap is caught up in order
    daily = _rows(db, model_id)
    assert daily["as_of"].str.len().eq(10).all() and not daily.duplicated(["detector", "as_of"]).any()

    resumed = drift_watch.resume_points([model_id], db)[model_id]
    assert resumed.last == days[-1] and resumed.state is not None

    with db.conn:  # uninterrupted: drop those 12 days and apply them in one call
        db.conn.execute("DELETE FROM drift_watch_state WHERE model_id = ? AND as_of >= ?", [model_id, days[0]])
    assert drift_watch.resume_points([model_id], db)[model_id].state is None  # saved for a day no longer stored
    assert drift_watch.update([model_id], days[-1], db=db) == {model_id: 12}  # recomputed from the training end
    pd.testing.assert_frame_equal(_rows(db, model_id), daily)
    assert drift_watch.resume_points([model_id], db)[model_id] == resumed
    replayed = drift_watch.replay(model_id, days[0], days[-1], db=db)
    stored = drift_watch.history(model_id, db, start=days[0], with_detail=True)
    pd.testing.assert_frame_equal(replayed, stored)


def test_nothing_is_stored_beyond_the_data_or_inside_the_training_window(registry_copy):
    from core import drift_watch
    from core.market import last_trading_day

    db = registry_copy
    model = _model(db, "MSFT")
    assert drift_watch.update([model["model_id"]], model["train_end"], db=db) == {}
    drift_watch.update([model["model_id"]], "2030-01-02", db=db)
    rows = _rows(db, model["model_id"])
    assert rows["as_of"].max() == f"{last_trading_day('MSFT', db=db):%Y-%m-%d}"
    assert rows["as_of"].min() > model["train_end"]
    assert drift_watch.update([model["model_id"]], "2030-01-02", db=db) == {model["model_id"]: 0}


def test_error_jump_raises_an_alarm_within_days_with_the_right_onset(error_jump):
    from core import drift_watch

    db, model, onset, alarm_day, days = error_jump
    assert alarm_day is not None and days.index(alarm_day) - days.index(onset) <= 3  # within 4 trading days
    [record] = [r for r in drift_watch.alarms(model["model_id"], alarm_day, db=db) if r["detector"] == "error"]
    assert record["onset_day"] == onset and record["direction"] == "up"
    assert record["statistic"] >= record["threshold"] and record["alarm_day"] == alarm_day
    assert record["reason"].startswith(f"changed since {onset}: the model error / its validation mean rose (error, statistic")
    # the change lasts: the detector alarms again after its restart; one episode, the same onset
    later = days[days.index(alarm_day) + 3]
    drift_watch.update([model["model_id"]], later, db=db)
    [again] = [r for r in drift_watch.alarms(model["model_id"], later, db=db) if r["detector"] == "error"]
    assert again["onset_day"] == onset and again["n_alarms"] >= 2 and again["first_alarm_day"] == alarm_day
    assert "Changed since" in drift_watch.in_words([again]) and pd.Timestamp(onset).strftime("%B") in drift_watch.in_words([again])


def test_the_verdict_in_words_gives_each_detector_its_own_dates():
    from core.drift_report import in_words

    volatility = {"detector": "returns_variance", "signal": "volatility of daily returns", "direction": "up",
                  "stream": "return", "onset_day": "2018-10-10", "first_alarm_day": "2018-11-07",
                  "alarm_day": "2018-12-24", "delay_days": 20}
    error = {"detector": "error", "signal": "model error / its validation mean", "direction": "up", "stream": "error",
             "onset_day": "2018-12-18", "first_alarm_day": "2018-12-20", "alarm_day": "2018-12-20", "delay_days": 3}
    words = in_words([error, volatility])
    assert words.startswith("Changed since Wednesday 10 October 2018 (the earliest onset): the volatility")
    # delay_days counts both ends (1 = the same day): 20 is 19 trading days later
    assert ("volatility of daily returns rose (since 2018-10-10, alarm on 2018-11-07, 19 trading days later; "
            "latest 2018-12-24); the model error / its validation mean rose (since 2018-12-18, alarm on 2018-12-20, "
            "2 trading days later).") in words
    assert in_words([error]).startswith("Changed since Tuesday 18 December 2018: the model error")
    same_day = error | {"onset_day": "2018-12-20", "delay_days": 1}
    assert "(since 2018-12-20, alarm on 2018-12-20, the same day)" in in_words([same_day])
    assert in_words([]) == ""
    # the verdict's reason line names the same first alarm, then the latest
    from core.drift_report import reason

    assert reason(volatility | {"statistic": 16.7, "threshold": 16.1}).endswith(
        "alarm on 2018-11-07, latest 2018-12-24)")


def test_a_step_in_returns_alarms_with_the_exact_onset(registry_copy):
    """The pure path (`advance`) on crafted inputs: calm returns at the reference median, then +3 robust sd a day."""
    from core import drift_watch, watch_step

    db = registry_copy
    model = _model(db)
    profile = drift_watch.ensure_profile(model["model_id"], db)
    standardiser = profile["detectors"]["returns_mean"]["standardiser"]
    days = [f"{d:%Y-%m-%d}" for d in pd.bdate_range("2014-01-06", periods=40)]
    ret = np.where(np.arange(40) < 20, standardiser["centre"], standardiser["centre"] + 3 * standardiser["scale"])
    width = len(profile["detectors"]["feature_scale"]["streams"])
    inputs = watch_step.DayInputs(days=days, ret=ret, err=np.full(40, np.nan), feat=np.zeros((40, width)),
                                  prev=np.zeros((40, width)), values=np.zeros((40, len(profile["range"]["features"]))))
    rows = pd.DataFrame(watch_step.advance([profile], [None], [inputs])[0].rows)
    mean = rows[(rows["detector"] == "returns_mean") & (rows["alarm"] == 1)]
    assert len(mean) and mean["as_of"].iloc[0] <= days[23] and mean["onset_day"].iloc[0] == days[20]
    assert not rows[rows["as_of"] < days[20]]["alarm"].any()  # no alarm on the calm days
    # vectorised over models = one model at a time
    twice = watch_step.advance([profile, profile], [None, None], [inputs, inputs])
    assert twice[0] == twice[1] == watch_step.advance([profile], [None], [inputs])[0]


def test_the_verdict_alerts_and_retrain_carry_the_alarm(error_jump):
    from core import alerts, drift, drift_report, drift_watch

    db, model, onset, alarm_day, days = error_jump
    report = drift.check_model(model["model_id"], alarm_day, db=db, store=False)
    assert [r["detector"] for r in report.sequential] == ["error"]
    assert report.severity in ("significant", "critical") and report.overall_drift
    assert any(r.startswith(f"changed since {onset}: ") and "statistic" in r and "threshold" in r for r in report.reasons)
    assert drift.DriftReport.from_dict(json.loads(report.to_json())).sequential == report.sequential
    retrain, why = drift_report.should_retrain(report)
    assert retrain and ("error rose" in why or "MAE" in why)
    assert alerts.evaluate_model(model, alarm_day, report, 0.0, db=db).count("sequential_drift") == 1
    stored = db.execute("SELECT dedup_key, message FROM alerts WHERE kind = 'sequential_drift'").fetchall()
    assert stored[0][0] == f"{model['model_id']}|sequential_drift|error|{onset}" and f"changed since {onset}" in stored[0][1]
    next_day = days[days.index(alarm_day) + 1]
    drift_watch.update([model["model_id"]], next_day, db=db)
    later = drift.check_model(model["model_id"], next_day, db=db, store=False)
    assert later.sequential and later.sequential[0]["onset_day"] == onset
    assert "sequential_drift" not in alerts.evaluate_model(model, next_day, later, 0.0, db=db)  # one per (detector, onset)
    quiet = drift_watch.retrain_trigger([{**report.sequential[0], "detector": "feature_scale"}])
    assert quiet is None  # a data-quality alarm asks for a data fix, not a retrain


def test_daily_cycle_advances_the_detectors_before_the_drift_check(registry_copy):
    from core import drift_watch
    from core.cycle import STEPS, run_daily_cycle

    db = registry_copy
    assert STEPS.index("backfill") < STEPS.index("watch") < STEPS.index("drift")
    model = _model(db)
    day = _days_after(model["symbol"], drift_watch.history_end(model["model_id"], db), db)[0]
    summary = run_daily_cycle(day, db=db, symbols=["AAPL"])
    assert summary["failed"] == 0
    assert drift_watch.history_end(model["model_id"], db) == day
    check = json.loads(db.execute("SELECT report_json FROM drift_checks WHERE model_id = ? AND as_of = ?",
                                  [model["model_id"], day]).fetchone()[0])
    assert check["sequential"] == []


def test_daily_cycle_advances_all_models_in_one_batched_update_equal_to_one_at_a_time(registry_copy, monkeypatch):
    """The cycle calls `drift_watch.update` once for all the day's models (one transaction), and the rows and
    resume state it stores equal those each model gets when advanced alone."""
    from core import drift_watch
    from core.cycle import run_daily_cycle
    from core.registry import list_models

    db = registry_copy
    deployed = [m["model_id"] for m in list_models(status="deployed", db=db)]
    assert len(deployed) == 2
    start = max(drift_watch.history_end(m, db) for m in deployed)
    day = _days_after("AAPL", start, db)[1]
    calls, real = [], drift_watch.update
    monkeypatch.setattr(drift_watch, "update", lambda ids=None, day=None, db=None, cache=None: calls.append(list(ids))
                        or real(ids, day, db=db, cache=cache))
    summary = run_daily_cycle(day, db=db)
    assert summary["failed"] == 0 and calls == [deployed]  # one batched call, no per-model call
    assert all(drift_watch.history_end(m, db) == day for m in deployed)
    rows = {m: _rows(db, m) for m in deployed}
    states = drift_watch.resume_points(deployed, db)
    with db.conn:  # back to before the cycle's days, then one model at a time
        db.conn.execute("DELETE FROM drift_watch_state WHERE as_of > ?", [start])
        db.conn.execute("DELETE FROM drift_watch_resume")
    for model_id in deployed:
        real([model_id], day, db=db)
        pd.testing.assert_frame_equal(_rows(db, model_id), rows[model_id])
    assert drift_watch.resume_points(deployed, db) == states


def test_drift_page_shows_the_detectors_and_changed_since(error_jump):
    from core import drift_watch

    db, model, onset, alarm_day, days = error_jump
    at = page_app("pages/3_Drift.py").run()  # as the multipage app: the page links to Model Management
    assert not at.exception
    at.selectbox(key="drift_symbol").set_value("AAPL").run()
    at.selectbox(key="drift_model").set_value(model["model_id"]).run()
    current = [w.value for w in at.warning if "Changed since" in w.value]  # the current alarm, in words
    assert len(current) == 1 and current[0].startswith(f"Alarms of the last {drift_watch.HOLD_DAYS} trading days")
    assert len(at.get("plotly_chart")) >= 2  # detector small multiples, onset on the price
    at.date_input(key=f"drift_as_of_{model['model_id']}").set_value(pd.Timestamp(alarm_day).date())
    at.button[0].click().run()
    assert not at.exception
    assert any(f"changed since {onset}" in m.value.replace("\\", "") for m in at.markdown)  # the verdict's reason
    assert sum("Changed since" in w.value for w in at.warning) == 2  # the verdict's and the detectors' section


def test_drift_page_without_state_says_how_to_get_it(registry_copy):
    from core.registry import list_models

    challenger = next(m for m in list_models("MSFT", db=registry_copy) if m["status"] != "deployed")
    at = page_app("pages/3_Drift.py").run()
    at.selectbox(key="drift_symbol").set_value("MSFT").run()
    at.selectbox(key="drift_model").set_value(challenger["model_id"]).run()
    assert not at.exception
    assert any("No sequential-detector state" in i.value and "daily cycle" in i.value for i in at.info)


def test_packed_state_round_trips_exactly_and_resuming_every_day_changes_nothing():
    """`pack` / `unpack` keep every number of a CusumArray (alarms, skipped days, no-day markers included): a run
    packed and unpacked after every day equals an uninterrupted run and one scalar `Cusum` per model."""
    from core.sequential import Cusum, CusumArray
    from core.watch_step import pack, packed_size, unpack

    thresholds = [[2.0, 3.0], [1.5, 4.0], [2.5, 2.5]]
    profiles = [{"detectors": {"demo": {"thresholds": h, "drifts": [0.25, 1.0], "two_sided": True,
                                        "streams": ["a", "b"]}}} for h in thresholds]
    uninterrupted = CusumArray(np.array(thresholds), (0.25, 1.0), True, ("a", "b"), "demo")
    resumed = unpack(profiles, pack({"demo": uninterrupted}))["demo"]
    scalar = [Cusum(h, (0.25, 1.0), True, ("a", "b"), "demo") for h in thresholds]
    rng = np.random.default_rng(3)
    for t, day in enumerate(pd.bdate_range("2020-01-01", periods=30)):
        u = rng.normal(0.6, 1.5, (3, 2))
        u[t % 3] = np.nan  # one model skips a day now and then
        uninterrupted.update(u, day=day)
        resumed = unpack(profiles, pack({"demo": resumed.update(u, day=day)}))["demo"]
        for cusum, row in zip(scalar, u):
            cusum.update(row, day=day)
        for key in ("stat", "start", "start_day", "n", "alarms", "last_alarm", "last_alarm_day", "day", "alarm_at",
                    "thresholds", "drifts"):
            assert np.array_equal(getattr(resumed, key), getattr(uninterrupted, key)), key
        assert [s.to_dict() for s in resumed.to_states()] == [c.to_dict() for c in scalar]
    assert uninterrupted.alarms.sum() > 0 and all(len(b) == packed_size(profiles[0]) for b in pack({"demo": resumed}))


def test_many_models_in_one_update_equal_one_model_at_a_time(registry_copy):
    """Batched reads (one price read per ticker, features once per anchor, one forecast query) and one vectorised
    step for models of two tickers give each model the inputs, rows and state it gets alone, and the inputs
    equal the feature frame built from the model's own anchor."""
    from core import drift_watch, watch_inputs
    from core.features import build_features
    from core.market import load_prices
    from core.registry import list_models

    db = registry_copy
    models = [m for m in list_models(db=db) if drift_watch.history_end(m["model_id"], db) is None]
    assert len({m["symbol"] for m in models}) == 2 and len(models) >= 2  # the demo's challengers: no state yet
    ids = [m["model_id"] for m in models]
    profiles = [drift_watch.ensure_profile(m, db) for m in ids]
    afters = [m["train_end"] for m in models]
    for model in models:  # forecasts on some days, so the error detector has inputs
        _log_forecasts(db, model, {d: 1.5 for d in _days_after(model["symbol"], model["train_end"], db)[5:15]})
    batched = watch_inputs.day_inputs_many(models, profiles, afters, None, db)
    for model, profile, got in zip(models, profiles, batched):
        alone = watch_inputs.day_inputs(model, profile, model["train_end"], None, db)
        assert got.days == alone.days and len(got.days) > 20
        for key in ("ret", "err", "feat", "prev", "values"):
            np.testing.assert_array_equal(getattr(got, key), getattr(alone, key))
        assert np.isnan(got.err[:5]).all() and np.allclose(got.err[5:15], 1.5)  # the logged forecasts count
        frame = build_features(load_prices(model["symbol"], start=watch_inputs.anchor(model), db=db), model["symbol"],
                               dropna=False)
        days = frame.index[frame.index > pd.Timestamp(model["train_end"])]
        assert got.days == [f"{d:%Y-%m-%d}" for d in days]
        streams = profile["detectors"]["feature_scale"]["streams"]
        np.testing.assert_array_equal(got.ret, np.log(frame["close"]).diff().loc[days].to_numpy())
        np.testing.assert_array_equal(got.feat, frame.loc[days, streams].to_numpy())
        np.testing.assert_array_equal(got.prev, frame[streams].shift(1).loc[days].to_numpy())
        np.testing.assert_array_equal(got.values, frame.loc[days, profile["range"]["features"]].to_numpy())

    together = drift_watch.update(ids, db=db)
    rows = {m: _rows(db, m) for m in ids}
    states = drift_watch.resume_points(ids, db)
    with db.conn:
        for table in ("drift_watch_state", "drift_watch_resume"):
            db.conn.execute(f"DELETE FROM {table} WHERE model_id IN (SELECT value FROM json_each(?))", [json.dumps(ids)])
    for model_id in ids:
        assert drift_watch.update([model_id], db=db) == {model_id: together[model_id]}
        pd.testing.assert_frame_equal(_rows(db, model_id), rows[model_id])
    assert drift_watch.resume_points(ids, db) == states


def test_a_database_from_before_the_resume_table_is_migrated_and_resumes_exactly(error_jump):
    """Migration 005 on a database whose daily rows held the full state (as before it): rows without an alarm drop
    it, alarm rows keep their alarm, the verdict's episodes are unchanged, and the next update recomputes the
    state from the training end and stores what an uninterrupted run stores."""
    from core import drift_watch, schema, store

    db, model, onset, alarm_day, days = error_jump
    model_id = model["model_id"]
    before = drift_watch.history(model_id, db, with_detail=True), drift_watch.episodes(model_id, db)
    with db.conn:  # the layout before migration 006: a full Cusum.to_dict state on every CUSUM row
        for detector, as_of, alarm, detail in db.execute(
                "SELECT detector, as_of, alarm, state_json FROM drift_watch_state WHERE detector != 'feature_range'"
                ).fetchall():
            full = {"name": detector, "stat": [[[0.0]]], "alarm": json.loads(detail) if alarm else None}
            db.conn.execute("UPDATE drift_watch_state SET state_json = ? WHERE detector = ? AND as_of = ? AND "
                            "model_id = ?", [json.dumps(full), detector, as_of, model_id])
        db.conn.execute("DROP TABLE drift_watch_resume")
        db.conn.execute("PRAGMA user_version = 5")
    store.close_all()
    db = store.get_db()  # migrates
    assert store.schema_version(db) == len(schema.MIGRATIONS)  # 006 and every later migration
    stored = pd.read_sql_query("SELECT alarm, state_json FROM drift_watch_state WHERE model_id = ?", db.conn,
                               params=[model_id])
    assert stored.loc[stored["alarm"] == 0, "state_json"].isna().all() and stored["alarm"].sum() >= 1
    pd.testing.assert_frame_equal(drift_watch.history(model_id, db, with_detail=True), before[0])
    assert drift_watch.episodes(model_id, db) == before[1]
    next_day = days[days.index(alarm_day) + 1]
    assert drift_watch.update([model_id], next_day, db=db) == {model_id: 1}
    replayed, state = drift_watch.replay(model_id, next_day, next_day, db=db, with_state=True)
    pd.testing.assert_frame_equal(drift_watch.history(model_id, db, start=next_day, with_detail=True), replayed)
    assert drift_watch.resume_points([model_id], db)[model_id].state == state
