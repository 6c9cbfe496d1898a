"""Served predictions are evidence (issue 10, section 2 and the serving points of section 3).

One request, one row (enforced by the database, also under concurrency and for old databases);
replays refuse days outside the test and inside an arm's training window; views and replays repeated
many times cannot move an experiment's counts or verdict, nor make an A/A test find a winner; a broken
arm falls back to the deployed model with an alert; experiment parameters are bounded; user text is
escaped. Real SQLite files and real registries throughout; the only tampering is writing bytes into a
real artifact to break its hash.
"""
from __future__ import annotations

import logging
import math
import re
import sqlite3
import string
import threading
from pathlib import Path

import pandas as pd
import pytest
import sqlite_utils

from conftest import page_app

MSFT_TRAIN_END = "2012-02-28"  # the demo trains both MSFT models on the closes up to this day


def _count(db, where: str = "1 = 1", params=()) -> int:
    return db.execute(f"SELECT COUNT(*) FROM predictions WHERE {where}", list(params)).fetchone()[0]


def _models(symbol: str) -> tuple[str, str]:
    from core.registry import deployed_model, list_models

    champion = deployed_model(symbol)["model_id"]
    other = next(m["model_id"] for m in list_models(symbol) if m["model_id"] != champion and m["model_type"] in ("rf", "xgb"))
    return champion, other


def _fingerprint(analysis) -> str:
    """Everything a decision is read from: per-arm counts and errors, p-values, winner."""
    comparisons = [(c.n, c.n_control, c.p_sequential, c.p_fixed, c.significant) for c in analysis.comparison.comparisons]
    return repr((analysis.arms.to_json(), comparisons, analysis.winner, len(analysis.observations)))  # repr: nan == nan


# --- 1. one request, one row --------------------------------------------------------------------------

def test_migration_removes_duplicates_then_the_database_refuses_them(tmp_path, monkeypatch, caplog):
    """A database written before migration 002, holding duplicated served rows, is cleaned on open
    (the earliest row of each request kept, the count logged), then new duplicates are refused."""
    from core import schema, store

    path = tmp_path / "old.db"
    old = sqlite_utils.Database(str(path))
    schema._m001_initial(old)
    old.execute("PRAGMA user_version = 1")
    old["models"].insert_all([{"model_id": "rf_v1_X", "symbol": "X"}, {"model_id": "xgb_v1_X", "symbol": "X"}])
    base = {"model_id": "rf_v1_X", "symbol": "X", "as_of": "2012-05-01", "target_date": "2012-05-02",
            "predicted_close": 10.0, "served": 1, "experiment_id": None, "arm": None}
    old["predictions"].insert_all([
        {**base, "id": 1}, {**base, "id": 2, "predicted_close": 11.0}, {**base, "id": 3},  # one request viewed three times
        {**base, "id": 4, "experiment_id": 7, "arm": "A"}, {**base, "id": 5, "experiment_id": 7, "arm": "A"},
        {**base, "id": 6, "experiment_id": 7, "arm": "B", "served": 0},  # a shadow row: its own request key
        {**base, "id": 7, "as_of": "2012-05-02"},
    ])
    old.conn.commit()
    old.close()

    monkeypatch.setenv("MLSA_DB_PATH", str(path))
    with caplog.at_level(logging.INFO, logger="core.schema"):
        db = store.get_db()
    assert "removed 3 duplicate prediction row(s)" in caplog.text
    assert [r[0] for r in db.execute("SELECT id FROM predictions ORDER BY id")] == [1, 4, 6, 7]
    assert store.schema_version(db) == len(schema.MIGRATIONS)
    for duplicate in ({**base}, {**base, "experiment_id": 7, "arm": "A"}, {**base, "experiment_id": 7, "arm": "B", "served": 0}):
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            db["predictions"].insert(duplicate)
    db["predictions"].insert({**base, "experiment_id": 7, "arm": "B", "served": 1})  # arm B served on another request: allowed
    db["predictions"].insert({**base, "model_id": "xgb_v1_X"})  # another model on the same day: allowed


def test_predict_twice_is_one_row_also_in_shadow_mode(registry_copy):
    from core.abtest import create_experiment
    from core.predict import predict

    champion, other = _models("MSFT")
    create_experiment("shadow once", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-09-04", duration_days=30, shadow=True)
    before = _count(registry_copy)
    first = predict("MSFT", "2012-09-10")
    assert _count(registry_copy) == before + 2  # the served arm and the other arm's shadow
    for key in (None, "MSFT:2012-09-10", "a refresh", "another user"):  # other keys could route to the other arm
        again = predict("MSFT", "2012-09-10", request_key=key)
        assert (again.prediction_id, again.arm, again.predicted_close) == (first.prediction_id, first.arm, first.predicted_close)
    assert _count(registry_copy) == before + 2


def test_concurrent_requests_for_one_day_log_one_row(registry_copy):
    """Four threads (four connections) ask for the same request at once: one row, one id for all."""
    from core.predict import predict
    from core.store import get_db

    ids, errors = [], []
    barrier = threading.Barrier(4)

    def serve() -> None:
        try:
            barrier.wait()
            ids.append(predict("MSFT", "2012-10-02", db=get_db()).prediction_id)
        except Exception as exc:  # reported below; a thread cannot fail the test itself
            errors.append(repr(exc))

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(set(ids)) == 1 and len(ids) == 4
    assert _count(registry_copy, "symbol = 'MSFT' AND as_of = '2012-10-02'") == 1


# --- 3. replay refuses what it must; nothing in-sample is logged as served -----------------------------

def test_replay_refuses_days_outside_the_test_and_inside_a_training_window(registry_copy):
    from core.abtest import create_experiment, ExperimentError, get_experiment
    from core.ab_replay import replay_bounds, simulate

    champion, other = _models("MSFT")
    experiment_id = create_experiment("windows", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-01-03", duration_days=90)
    assert replay_bounds(get_experiment(experiment_id)) == (MSFT_TRAIN_END, "2012-04-01")
    before = _count(registry_copy)
    for start, end in (("2012-01-03", "2012-01-31"),  # inside both arms' training window
                       ("2012-02-27", "2012-03-05"),  # starts one day inside it
                       ("2012-03-01", "2012-04-30"),  # ends after the test
                       ("2011-12-01", "2012-03-05")):  # starts before the test
        with pytest.raises(ExperimentError, match=f"first allowed day is {MSFT_TRAIN_END}"):
            simulate(experiment_id, start, end)
    assert _count(registry_copy) == before  # refused before anything was written
    assert simulate(experiment_id, MSFT_TRAIN_END, "2012-03-05") == 5
    served = list(registry_copy.query("SELECT as_of FROM predictions WHERE experiment_id = ? AND served = 1", [experiment_id]))
    assert min(r["as_of"] for r in served) == MSFT_TRAIN_END


def test_no_served_row_inside_the_serving_models_training_window_from_any_path(registry_copy):
    from core.abtest import create_experiment, ExperimentError, record_prediction
    from core.predict import active_route
    from core.predict import InSampleForecastError, predict

    champion, other = _models("MSFT")
    experiment_id = create_experiment("in-sample", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-01-03", duration_days=90)
    before = _count(registry_copy)
    with pytest.raises(InSampleForecastError, match="inside the training window"):
        predict("MSFT", "2012-01-10")  # the deployed model and both arms were trained on this day's outcome
    assert active_route(registry_copy, "MSFT", "MSFT:2012-01-10", "2012-01-10") is None  # never routed into a test
    assert active_route(registry_copy, "MSFT", "MSFT:2012-03-01", "2012-03-01").experiment_id == experiment_id
    with pytest.raises(ExperimentError, match=f"inside the training window.*first allowed day is {MSFT_TRAIN_END}"):
        record_prediction(experiment_id, other, 30.0, as_of="2012-01-10", last_close=30.0)
    assert predict("MSFT", "2012-01-10", log_prediction=False).prediction_id is None  # a what-if is fine
    assert _count(registry_copy) == before


# --- 4. a winner cannot be manufactured by views or replays -------------------------------------------

def test_repeated_views_and_replays_change_neither_counts_nor_verdict(registry_copy):
    from core.abtest import analyze, create_experiment, list_experiments
    from core.ab_replay import simulate

    champion, other = _models("MSFT")
    experiment_id = create_experiment("repeat", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-03-01",
                                      duration_days=120, min_samples=5)
    simulate(experiment_id, "2012-03-01", "2012-06-28")
    counts, verdict = _count(registry_copy), _fingerprint(analyze(experiment_id))
    served = int(list_experiments("MSFT").set_index("id").loc[experiment_id, "served"])
    assert served > 50

    for start, end in [("2012-03-01", "2012-06-28"), ("2012-04-02", "2012-04-30"), ("2012-06-01", "2012-06-28")] * 3:
        simulate(experiment_id, start, end)
    at = page_app("pages/1_Forecast.py").run()
    at.selectbox(key="fc_symbol").set_value("MSFT").run()
    for end in ["2012-04-16", "2012-06-01", "2012-04-16", "2012-06-28", "2012-06-01"]:  # back and forth over replayed days
        at.date_input(key="fc_range_MSFT").set_value((pd.Timestamp("2012-03-01").date(), pd.Timestamp(end).date())).run()
        assert not at.exception
        at.run()  # a rerun
    page_app("pages/4_AB_Tests.py").run()  # the A/B page analyses, it writes nothing

    assert _count(registry_copy) == counts
    assert int(list_experiments("MSFT").set_index("id").loc[experiment_id, "served"]) == served
    assert _fingerprint(analyze(experiment_id)) == verdict


@pytest.mark.parametrize("shadow", [False, True])
def test_an_aa_test_driven_by_repeated_replays_never_finds_a_winner(registry_copy, shadow):
    """Before one-request-one-row, replaying the same days added correlated copies to whichever arm
    they were routed to, shrinking the variance estimate until the peeking-safe rule fired. Now the
    same model in both arms stays without a winner however often the days are replayed."""
    from core.abtest import analyze, create_experiment
    from core.ab_replay import simulate

    champion, _ = _models("MSFT")
    experiment_id = create_experiment(f"A/A shadow={shadow}", "MSFT", [(champion, 0.5), (champion, 0.5)], "2012-03-01",
                                      duration_days=180, min_samples=5, shadow=shadow)
    first = None
    for _ in range(6):
        simulate(experiment_id, "2012-03-01", "2012-08-17")
        analysis = analyze(experiment_id)
        assert analysis.winner is None and not analysis.significant
        assert analysis.comparison.enough_samples  # the verdict is a real one, not "keep collecting"
        first = first or _fingerprint(analysis)
        assert _fingerprint(analysis) == first
    n = analysis.comparison.n
    assert n["A"] + n["B"] == (2 * 118 if shadow else 118)  # one served row per replayed day (+ one shadow row in shadow mode)


# --- 5. a broken arm never takes serving down ------------------------------------------------------------

def _break_artifact(model_id: str) -> Path:
    from core.config import get_settings
    from core.registry import get_model

    path = Path(get_settings().models_dir) / get_model(model_id)["artifact_path"]
    with path.open("ab") as handle:
        handle.write(b"tampered")  # the recorded sha256 no longer matches
    return path


def _day_routed_to(experiment_id: int, arm_index: int, days) -> str:
    from core.ab_stats import route_key

    return next(d for d in days if route_key(experiment_id, f"MSFT:{d}", [0.5, 0.5]) == arm_index)


def test_a_broken_arm_falls_back_to_the_deployed_model_with_an_alert(registry_copy, caplog):
    from core.abtest import create_experiment, ExperimentError
    from core.ab_replay import simulate
    from core.alerts import alerts_frame
    from core.predict import ARM_BROKEN_ALERT, predict

    champion, other = _models("MSFT")
    experiment_id = create_experiment("broken arm", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-09-04", duration_days=30)
    _break_artifact(other)
    day = _day_routed_to(experiment_id, 1, [f"2012-09-{d:02d}" for d in (4, 5, 6, 7, 10, 11, 12, 13, 14)])
    with caplog.at_level(logging.WARNING, logger="core.predict"):
        served = predict("MSFT", day)
    assert served.model_id == champion and served.experiment_id is None and served.arm is None
    row = registry_copy.execute("SELECT model_id, experiment_id, arm, served FROM predictions WHERE id = ?",
                                [served.prediction_id]).fetchone()
    assert tuple(row) == (champion, None, None, 1)
    assert f"arm B ({other}) cannot be loaded" in caplog.text
    alerts = alerts_frame(model_id=other)
    assert list(alerts["kind"]) == [ARM_BROKEN_ALERT] and alerts["severity"].iloc[0] == "critical"
    assert predict("MSFT", day).prediction_id == served.prediction_id  # still one request, one row
    assert len(alerts_frame(model_id=other)) == 1

    with pytest.raises(ExperimentError, match=f"Arm B \\({other}\\) cannot be used"):
        simulate(experiment_id, "2012-09-04", "2012-09-14")  # a replay is analysis, not serving: refused outright


def test_a_broken_shadow_arm_is_skipped_and_the_request_served(registry_copy):
    from core.abtest import create_experiment
    from core.alerts import alerts_frame
    from core.predict import predict

    champion, other = _models("MSFT")
    experiment_id = create_experiment("broken shadow", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-09-04",
                                      duration_days=30, shadow=True)
    _break_artifact(other)
    day = _day_routed_to(experiment_id, 0, [f"2012-09-{d:02d}" for d in (4, 5, 6, 7, 10, 11, 12, 13, 14)])
    served = predict("MSFT", day)
    assert (served.model_id, served.arm, served.experiment_id) == (champion, "A", experiment_id)
    rows = list(registry_copy.query("SELECT arm, served FROM predictions WHERE experiment_id = ?", [experiment_id]))
    assert rows == [{"arm": "A", "served": 1}]
    assert "shadow forecasts are not logged" in alerts_frame(model_id=other)["message"].iloc[0]


def test_create_experiment_refuses_an_arm_whose_artifact_does_not_verify(registry_copy):
    from core.abtest import create_experiment, ExperimentError

    champion, other = _models("MSFT")
    _break_artifact(other)
    with pytest.raises(ExperimentError, match=f"Arm B \\({other}\\) cannot be used: its artifact does not verify"):
        create_experiment("refused", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-09-04")
    assert not list(registry_copy.query("SELECT 1 FROM experiments WHERE name = 'refused'"))


# --- 6. unbounded experiment parameters ------------------------------------------------------------------

@pytest.mark.parametrize(("change", "message"), [
    ({"name": "x" * 121}, "keep it to 120"),
    ({"name": "   "}, "Give the experiment a name"),
    ({"duration_days": 0}, "duration .* from 1 to 365"),
    ({"duration_days": 366}, "duration .* from 1 to 365"),
    ({"duration_days": 2.5}, "whole number"),
    ({"duration_days": math.nan}, "finite"),
    ({"duration_days": math.inf}, "finite"),
    ({"min_samples": 1}, "min_samples .* from 2 to 100,000"),
    ({"min_samples": 100_001}, "min_samples .* from 2 to 100,000"),
    ({"min_samples": math.nan}, "finite"),
    ({"min_samples": "many"}, "must be a number"),
    ({"confidence_level": 0.5}, "above 0.5 and at most 0.999"),
    ({"confidence_level": 0.9995}, "above 0.5 and at most 0.999"),
    ({"confidence_level": math.nan}, "finite"),
    ({"shares": (math.nan, 0.5)}, "traffic share of arm A must be a finite"),
    ({"shares": (math.inf, 0.5)}, "finite"),
    ({"shares": (1.5, -0.5)}, "above 0 and at most 1"),
    ({"shares": (0.5, 0.4)}, "sum to 100"),
    ({"arms": 7}, "2 to 6 arms"),
    ({"start_date": "not a date"}, "is not a date"),
    ({"metric": "rmse"}, "Unknown metric"),
])
def test_unbounded_experiment_parameters_are_refused(registry_copy, change, message):
    from core.abtest import create_experiment, ExperimentError

    champion, other = _models("MSFT")
    shares = change.pop("shares", (0.5, 0.5))
    arms = [(champion, 1 / 7)] * change.pop("arms") if "arms" in change else [(champion, shares[0]), (other, shares[1])]
    kwargs = {"name": "bounded", "start_date": "2012-09-04", **change}
    with pytest.raises(ExperimentError, match=message):
        create_experiment(kwargs.pop("name"), "MSFT", arms, kwargs.pop("start_date"), **kwargs)
    assert _count(registry_copy, "1 = 0") == 0 and not list(registry_copy.query("SELECT 1 FROM experiments WHERE name = 'bounded'"))


def test_the_bounds_themselves_are_accepted(registry_copy):
    from core.abtest import create_experiment, get_experiment

    champion, other = _models("MSFT")
    experiment_id = create_experiment("y" * 120, "MSFT", [(champion, 0.5), (other, 0.5)], "2012-09-04",
                                      duration_days=365, min_samples=100_000, confidence_level=0.999)
    experiment = get_experiment(experiment_id)
    assert (experiment["end_date"], experiment["min_samples"], experiment["confidence_level"]) == ("2013-09-03", 100_000, 0.999)


# --- 7. user text is text ---------------------------------------------------------------------------------

def _unescaped(source: str, specials: str) -> list[str]:
    """The special characters of a markdown source that are not backslash-escaped."""
    left, i = [], 0
    while i < len(source):
        if source[i] == "\\":
            i += 2  # an escape and the character it escapes
            continue
        if source[i] in specials:
            left.append(source[i])
        i += 1
    return left


def test_escape_markdown_escapes_every_markup_character():
    from core.text import escape_markdown

    required = "[]()*_`#<>!|~\\"
    text = "[click](http://evil.example) <img src=x onerror=alert(1)> **bold** _i_ `c` # h !|~ \\ $x$ :rocket: &lt; \\*"
    escaped = escape_markdown(text)
    assert _unescaped(escaped, required + "$:&") == []
    assert re.sub(r"\\(.)", r"\1", escaped) == text  # markdown shows exactly the original text
    assert all(escape_markdown(ch) == "\\" + ch for ch in required)
    assert escape_markdown(string.ascii_letters + string.digits + " ") == string.ascii_letters + string.digits + " "


def _rendered_sources(at) -> list[str]:
    """The markdown source of every element Streamlit renders as markdown."""
    kinds = ("markdown", "caption", "title", "header", "subheader", "success", "info", "warning", "error")
    return [str(element.value) for kind in kinds for element in at.get(kind)]


EVIL = "[click](http://evil.example) <img src=x onerror=alert(1)> **bold**"


def test_an_experiment_name_with_markup_is_shown_literally(registry_copy):
    from core.abtest import create_experiment
    from core.text import escape_markdown

    champion, other = _models("MSFT")
    create_experiment(EVIL, "MSFT", [(champion, 0.5), (other, 0.5)], "2012-09-04")
    at = page_app("pages/4_AB_Tests.py").run()
    assert not at.exception
    sources = _rendered_sources(at)
    assert any(escape_markdown(EVIL) in s for s in sources), sources  # the subheader, escaped
    for source in sources:
        assert "](http" not in source and "**bold**" not in source, source  # escaped: "\\]\\(" and "\\*\\*"
        assert not re.search(r"(?<!\\)<img", source), source
    assert EVIL in list(at.dataframe[0].value["name"])  # a dataframe cell is text: shown as typed

    at.button(key="ab_stop").click().run()  # the confirmation quotes the name
    confirm = next(m.value for m in at.markdown if m.value.startswith("Confirm: stop"))
    assert f"**{escape_markdown(EVIL)}**" in confirm


def test_an_a_b_result_built_on_in_sample_days_cannot_deploy(registry_copy, monkeypatch):
    """Served rows logged inside the arms' training window (before such rows were refused) never count;
    and if an analysis ever did count them, stop refuses to deploy its winner."""
    import core.abtest as abtest
    from core.market import load_prices
    from core.registry import deployed_model

    champion, other = _models("MSFT")
    experiment_id = abtest.create_experiment("legacy in-sample", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-01-03",
                                             duration_days=90, min_samples=5)
    days = load_prices("MSFT", start="2012-01-03", end="2012-02-27").index
    rows = [{"model_id": model, "symbol": "MSFT", "as_of": f"{day:%Y-%m-%d}", "target_date": f"{day:%Y-%m-%d}",
             "predicted_close": 30.0 + error, "lower": 29.0, "upper": 31.0, "last_close": 30.0, "latency_ms": 1.0,
             "experiment_id": experiment_id, "arm": arm, "request_key": f"legacy:{day:%Y-%m-%d}:{arm}",
             "actual_close": 30.0, "served": 1, "created_at": "2012-01-01T00:00:00Z"}
            for i, day in enumerate(days)
            for arm, model, error in (("A", champion, 1.0 + 0.1 * (i % 3)), ("B", other, 0.1 * (i % 2)))]
    registry_copy["predictions"].insert_all(rows)
    assert abtest.analyze(experiment_id).winner is None  # the in-sample rows are not evidence

    monkeypatch.setattr("core.ab_analysis.first_scored_day", lambda experiment, db: "2000-01-01")  # an analysis that counts them
    assert abtest.analyze(experiment_id).winner == "B"
    with pytest.raises(abtest.ExperimentError, match="cannot deploy.*inside an arm's training window"):
        abtest.stop(experiment_id, deploy_winner=True, actor="test", override=True)
    assert deployed_model("MSFT")["model_id"] == champion
    assert abtest.get_experiment(experiment_id)["status"] == "running"
