"""The closed loop on a scratch registry, through the real daily cycle: drift -> retrain -> gate -> shadow
A/B test -> decided (deployed and watched / archived / left for approval), idempotent per day, and a
cycle killed mid-retrain (a real process, SIGKILL) resumed without a second challenger in test."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_monitoring import FakeReport, install_fake_drift

SYMBOL = "MSFT"
CUTOFF = "2011-06-01"
HERE = Path(__file__).resolve().parent


def _days(n: int, start: str = "2012-01-01") -> list[str]:
    from core.market import load_prices

    return [f"{d:%Y-%m-%d}" for d in load_prices(SYMBOL, start=start).index[:n]]


def loop_setup(monkeypatch, bias: dict[str, float] | None = None, slow_artifacts: float = 0.0) -> None:
    """The loop's switches on, a drift trigger every day, a retrain that passes its gate (a naive
    challenger whose walk-forward errors are tiny) and, optionally, live forecasts of some model types
    biased by a number of dollars (a worse champion or challenger that the shadow test must see)."""
    from core import lifecycle, predict, training

    for name, value in {"MLSA_ENABLE_AUTO_RETRAIN": "1", "MLSA_RETRAIN_CONFIRMATIONS": "1",
                        "MLSA_CHALLENGER_MIN_SAMPLES": "5", "MLSA_AB_DEFAULT_DURATION_DAYS": "14"}.items():
        monkeypatch.setenv(name, os.environ.get(name, value))
    install_fake_drift(monkeypatch, lambda m, d: FakeReport(True, "significant", ["fake drift"], retrain=True))
    real_train = training.train_model

    def gated(symbol, model_type, train_end=None, **kwargs):
        trained = real_train(symbol, "naive", train_end=train_end)
        trained.validation = trained.validation.assign(predicted_close=trained.validation["actual_close"] - 0.001)
        return trained

    monkeypatch.setattr(training, "train_model", gated)
    if bias:
        real_forecast = predict.forecast

        def biased(model, last_close, features):
            ret, close, lower, upper = real_forecast(model, last_close, features)
            extra = bias.get("champion" if model.row["parent_id"] is None else "challenger", 0.0)
            return ret, close + extra, lower + extra, upper + extra

        monkeypatch.setattr(predict, "forecast", biased)
    if slow_artifacts:
        real_write = lifecycle.write_model_artifacts

        def slow(model_id, db=None):
            time.sleep(slow_artifacts)
            return real_write(model_id, db=db)

        monkeypatch.setattr(lifecycle, "write_model_artifacts", slow)


@pytest.fixture()
def champion(fresh_db):
    """A deployed naive champion (fast to train) in a private database."""
    from core.registry import deploy, register
    from core.training import train_model

    model_id = register(train_model(SYMBOL, "naive", train_end=CUTOFF), reason="test champion")
    deploy(model_id, reason="test champion", override=True)
    return model_id


def _cycle(day: str) -> dict:
    from core.cycle import run_daily_cycle

    return run_daily_cycle(day)["models"][0]


def _jobs(db) -> list[dict]:
    return list(db.query("SELECT id, status, challenger_id, decision FROM retrain_jobs WHERE status != 'blocked' ORDER BY id"))


def passes_certification(monkeypatch) -> None:
    """The real certification runs (and is audited), and its verdict is then taken as passed: the naive test
    challenger cannot beat naive, and these tests are about the loop, not about certification."""
    import dataclasses

    from core import lifecycle

    from core.registry import set_certification

    real = lifecycle.certify_with_card

    def passed(model_id, **kwargs):
        result = dataclasses.replace(real(model_id, **kwargs), certified=True)
        set_certification(model_id, True, result.to_details())  # what a passing certification stores
        return result

    monkeypatch.setattr(lifecycle, "certify_with_card", passed)


def test_a_better_challenger_wins_its_shadow_test_and_is_deployed_then_watched(champion, fresh_db, monkeypatch):
    from core.abtest import get_experiment
    from core.registry import deployed_model, get_model

    loop_setup(monkeypatch, bias={"champion": 3.0})  # the champion's live forecasts are $3 off
    passes_certification(monkeypatch)
    days = _days(30)
    first = _cycle(days[0])
    assert first["retrain"].startswith("testing: passed")
    job = _jobs(fresh_db)[0]
    challenger = job["challenger_id"]
    assert job["status"] == "testing" and deployed_model(SYMBOL)["model_id"] == champion
    experiment = get_experiment(fresh_db.execute("SELECT id FROM experiments").fetchone()[0])
    assert experiment["shadow"] and [(a["model_id"], a["traffic_share"]) for a in experiment["arms"]] == [
        (champion, 1.0), (challenger, 0.0)]
    decided_on = None
    for day in days[1:]:
        entry = _cycle(day)
        if decided_on is None:  # a drift alarm every day, but no second retrain while the challenger is decided
            assert fresh_db["models"].count == 2
            decided_on = day if "deployed" in entry["retrain"] else None
    assert decided_on is not None, "the challenger never won"
    # the champion served every request of the test; the challenger predicted the same ones, unserved
    served = dict(fresh_db.execute("SELECT model_id, COUNT(*) FROM predictions WHERE experiment_id = ? AND served = 1 "
                                   "GROUP BY model_id", [experiment["id"]]).fetchall())
    assert set(served) == {champion}
    assert get_experiment(experiment["id"])["status"] == "stopped" and get_experiment(experiment["id"])["winner"] == "B"
    assert deployed_model(SYMBOL)["model_id"] == challenger and get_model(champion)["status"] == "archived"
    deploy_row = fresh_db.execute("SELECT details_json FROM audit_log WHERE action = 'deploy' AND target = ?",
                                  [challenger]).fetchone()[0]
    assert "won its shadow test" in deploy_row
    # certified (or not) before the deploy, as for a manual deploy; the validation window watched it
    first_certify, deploy_id = fresh_db.execute(
        "SELECT MIN(CASE WHEN action = 'certify' THEN id END), MIN(CASE WHEN action = 'deploy' THEN id END) "
        "FROM audit_log WHERE target = ?", [challenger]).fetchone()
    assert first_certify is not None and first_certify < deploy_id
    assert _jobs(fresh_db)[0]["status"] == "validated"
    later = fresh_db.execute("SELECT DISTINCT model_id FROM predictions WHERE served = 1 AND as_of > ?", [decided_on]).fetchall()
    assert later == [(challenger,)]
    from core.loop_view import decisions_worth  # what the deploy was worth on the days after it, by hand

    worth = decisions_worth(days[0], days[-1]).iloc[0]
    after = [d for d in days if decided_on < d < days[-1]]
    assert worth["status"] == "validated" and worth["decided on"] == decided_on and worth["days after"] == len(after)
    closes = fresh_db.execute("SELECT close FROM prices WHERE symbol = ? AND date >= ? ORDER BY date LIMIT ?",
                              [SYMBOL, after[0], len(after) + 1]).fetchall()
    naive = sum(abs(b[0] - a[0]) for a, b in zip(closes, closes[1:])) / len(after)  # both arms are naive models here
    assert worth["champion MAE $"] == pytest.approx(naive) and worth["challenger MAE $"] == pytest.approx(naive)
    assert worth["worth $"] == pytest.approx(0.0, abs=1e-9)
    from core.loop_view import decision_worth, model_timeline, worth_in_words  # and the timeline shows it, to the data's end

    afterwards = model_timeline(challenger).query("step == 'afterwards'")["evidence"].tolist()
    last_day = fresh_db.execute("SELECT MAX(date) FROM prices WHERE symbol = ?", [SYMBOL]).fetchone()[0][:10]
    assert afterwards == [worth_in_words(decision_worth(_jobs(fresh_db)[0]["id"], last_day))]
    assert f"on the 60 trading days after {decided_on}" in afterwards[0] and "(deployed) was worth $+0.000 per day" in afterwards[0]


def test_no_difference_until_the_maximum_duration_archives_the_challenger(champion, fresh_db, monkeypatch):
    from core.registry import deployed_model, get_model

    monkeypatch.setenv("MLSA_AB_DEFAULT_DURATION_DAYS", "10")
    loop_setup(monkeypatch)  # both naive: the same forecasts, no winner
    days = _days(12)
    decisions = [_cycle(day)["retrain"] for day in days]
    challenger = _jobs(fresh_db)[0]["challenger_id"]
    assert any("blocked: challenger" in d for d in decisions[1:5])  # the daily alarm starts no second retrain
    closed = next(i for i, d in enumerate(decisions) if "archived" in d)
    assert days[closed] >= fresh_db.execute("SELECT end_date FROM experiments").fetchone()[0]
    assert "no significant difference in 10 days" in decisions[closed]
    assert get_model(challenger)["status"] == "archived" and "archived: no significant difference" in get_model(challenger)["reason"]
    assert deployed_model(SYMBOL)["model_id"] == champion
    assert _jobs(fresh_db)[0]["status"] == "archived"
    # the loop may start again after the test (a new drift alarm, cooldown permitting): one challenger at a time
    assert fresh_db.execute("SELECT COUNT(*) FROM experiments WHERE status = 'running'").fetchone()[0] <= 1


def test_a_worse_challenger_loses_and_is_archived(champion, fresh_db, monkeypatch):
    from core.registry import deployed_model, get_model

    loop_setup(monkeypatch, bias={"challenger": 3.0})
    decisions = [_cycle(day)["retrain"] for day in _days(12)]
    challenger = _jobs(fresh_db)[0]["challenger_id"]
    assert any("champion was significantly better" in d for d in decisions)
    assert get_model(challenger)["status"] == "archived" and deployed_model(SYMBOL)["model_id"] == champion


def test_approval_mode_leaves_the_winner_pending_until_approved(champion, fresh_db, monkeypatch):
    from core.lifecycle import decide_job
    from core.registry import deployed_model
    from core.retrain_jobs import approval_queue

    monkeypatch.setenv("MLSA_CHALLENGER_DEPLOY", "approval")
    loop_setup(monkeypatch, bias={"champion": 3.0})
    for day in _days(12):
        _cycle(day)
    job = _jobs(fresh_db)[0]
    assert job["status"] == "awaiting_deploy" and deployed_model(SYMBOL)["model_id"] == champion
    queue = approval_queue()
    assert list(queue["id"]) == [job["id"]]
    assert "deployed" in decide_job(job["id"], approved=True, actor="reviewer")
    assert deployed_model(SYMBOL)["model_id"] == job["challenger_id"]
    assert _jobs(fresh_db)[0]["status"] == "validating" and approval_queue().empty


def test_an_uncertified_winner_waits_for_a_person_and_an_approval_deploys_it_with_an_audited_override(
        champion, fresh_db, monkeypatch):
    from core.lifecycle import decide_job
    from core.registry import deployed_model

    loop_setup(monkeypatch, bias={"champion": 3.0})  # wins its test; a naive model fails certification
    for day in _days(12):
        _cycle(day)
    job = _jobs(fresh_db)[0]
    assert job["status"] == "awaiting_deploy" and "not certified" in job["decision"]
    assert deployed_model(SYMBOL)["model_id"] == champion  # the certification gate held without a person
    alert = fresh_db.execute("SELECT message FROM alerts WHERE kind = 'approval_needed' AND model_id = ?",
                             [job["challenger_id"]]).fetchone()
    assert alert is not None and "not certified" in alert[0]
    assert "deployed" in decide_job(job["id"], approved=True, actor="reviewer")
    assert deployed_model(SYMBOL)["model_id"] == job["challenger_id"]
    audit = fresh_db.execute("SELECT actor, details_json FROM audit_log WHERE action = 'deploy' AND target = ?",
                             [job["challenger_id"]]).fetchone()
    details = json.loads(audit[1])
    assert audit[0] == "reviewer" and details["override"] is True and "not certified" in details["reason"]


def test_each_step_is_idempotent_per_day(champion, fresh_db, monkeypatch):
    loop_setup(monkeypatch, bias={"champion": 3.0})

    def state():  # the loop's decisions: models, tests, jobs, served and shadow rows, and their audit records
        return (fresh_db["models"].count, fresh_db["experiments"].count, _jobs(fresh_db),
                fresh_db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0],
                fresh_db.execute("SELECT action, target FROM audit_log WHERE action IN ('register', 'certify', 'deploy', "
                                 "'archive', 'create_experiment', 'stop_experiment', 'retrain_testing', "
                                 "'retrain_validating', 'retrain_archived') ORDER BY id").fetchall())

    for day in _days(14):
        _cycle(day)
        once = state()
        _cycle(day)  # the same day again: nothing decided twice
        assert state() == once


def _run_killed_cycle(env: dict, day: str, db) -> None:
    """The daily cycle in a real process, SIGKILLed once its challenger is registered (while its
    artifacts are written, before the shadow test is opened)."""
    script = (f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]\n"
              "import pytest, test_challenger as t\n"
              "mp = pytest.MonkeyPatch(); t.loop_setup(mp, slow_artifacts=60)\n"
              f"from core.cycle import run_daily_cycle; run_daily_cycle({day!r})\n")
    process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=HERE.parent)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if db.execute("SELECT 1 FROM retrain_jobs WHERE challenger_id IS NOT NULL").fetchone():
                break
            time.sleep(0.2)
        assert process.poll() is None, "the cycle ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)


def test_a_cycle_killed_mid_retrain_resumes_without_a_second_challenger(champion, fresh_db, monkeypatch):
    from core.registry import get_model

    monkeypatch.setenv("MLSA_ENABLE_AUTO_RETRAIN", "1")
    days = _days(3)
    _run_killed_cycle(dict(os.environ), days[0], fresh_db)
    left = fresh_db.execute("SELECT id, status, challenger_id FROM retrain_jobs").fetchall()
    assert [status for _, status, _ in left] == ["running"]  # the kill left a job and a registered challenger
    first = left[0][2]
    loop_setup(monkeypatch)
    _cycle(days[0])  # the same day again: reconcile, then the decision is taken again
    jobs = list(fresh_db.query("SELECT status, challenger_id FROM retrain_jobs WHERE status != 'blocked' ORDER BY id"))
    assert [j["status"] for j in jobs] == ["interrupted", "testing"]
    assert get_model(first)["status"] == "archived"  # the killed run's challenger is never a second one in test
    arms = fresh_db.execute("SELECT a.model_id FROM experiments e JOIN experiment_arms a ON a.experiment_id = e.id "
                            "WHERE e.status = 'running' AND a.arm = 'B'").fetchall()
    assert arms == [(jobs[1]["challenger_id"],)]
    for day in days[1:]:
        _cycle(day)
    assert fresh_db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == 1


def _states() -> dict[str, tuple[str, str]]:
    from core.loop_view import loop_states

    return {r["ticker"]: (r["loop state"], r["detail"]) for r in loop_states().to_dict("records")}


def test_loop_state_per_ticker_and_the_model_timeline_follow_the_loop(champion, fresh_db, monkeypatch):
    from conftest import make_challenger_worse, page_app
    from core.challenger import approve_deploy
    from core.loop_view import model_timeline

    assert _states()[SYMBOL][0] == "healthy"
    monkeypatch.setenv("MLSA_ENABLE_AUTO_RETRAIN", "0")
    monkeypatch.setenv("MLSA_CHALLENGER_DEPLOY", "approval")
    loop_setup(monkeypatch, bias={"champion": 3.0})
    days = _days(30)
    _cycle(days[0])  # drift, but automatic retraining is off: the alarm stands
    state, detail = _states()[SYMBOL]  # and it says which safeguard held the retrain
    assert state == "drift alarm" and detail.startswith(f"significant drift on {days[0]} ({champion}); retraining held: "
                                                        "automatic retraining is off")
    monkeypatch.setenv("MLSA_ENABLE_AUTO_RETRAIN", "1")
    _cycle(days[1])
    _cycle(days[2])
    state, detail = _states()[SYMBOL]
    assert state == "challenger in test" and detail.endswith("of 5 samples, p = 1") and f"since {days[1]}" in detail
    at = page_app().run()  # Home shows it, with a link to the page that acts on it
    assert not at.exception
    table = next(d.value for d in at.dataframe if "loop state" in d.value.columns)
    assert table.set_index("ticker").loc[SYMBOL, "loop state"] == "challenger in test"
    assert "AB_Tests" in [element.proto.page for element in at.get("page_link") if "challenger in test" in element.proto.help]
    ab_page = page_app("pages/4_AB_Tests.py").run()  # which shows the shadow test, arm B at 0 % of the traffic
    assert not ab_page.exception and any("shadow" in m.value for m in [*ab_page.markdown, *ab_page.caption])
    i = 3
    while _states()[SYMBOL][0] == "challenger in test":
        _cycle(days[i])
        i += 1
    assert _states()[SYMBOL][0] == "awaiting approval"
    job = _jobs(fresh_db)[0]
    approve_deploy(job["id"], actor="reviewer", as_of=days[i - 1])  # approved on the replay's day
    state, detail = _states()[SYMBOL]
    assert state == "deployed, watched" and f"deployed on {days[i - 1]}, watched until {days[i + 4]}" in detail
    make_challenger_worse(monkeypatch, job["challenger_id"])
    while _states()[SYMBOL][0] == "deployed, watched":
        decision = _cycle(days[i])["retrain"]  # no second loop while this deploy is watched
        assert "blocked: challenger" in decision or "rolled back" in decision
        i += 1
    assert _states()[SYMBOL][0] == "rolled back"
    steps = list(model_timeline(job["challenger_id"])["step"])
    for step in ("trained", "gated, in test", "test opened", "test stopped", "tested", "certified", "deployed",
                 "rolled back"):
        assert step in steps, (step, steps)
    assert steps.index("trained") < steps.index("test opened") < steps.index("deployed") < steps.index("rolled back")
    page = page_app("pages/2_Model_Management.py").run()  # Model Management's audit tab shows that timeline
    page.selectbox(key="mm_model").set_value(job["challenger_id"]).run()
    assert not page.exception
    shown = next(d.value for d in page.dataframe if "step" in d.value.columns)
    assert {"gated, in test", "deployed", "rolled back"} <= set(shown["step"])


def test_only_a_shadow_arm_b_may_take_no_traffic(champion, fresh_db):
    from core.ab_stats import ExperimentError
    from core.abtest import create_experiment
    from core.registry import register
    from core.training import train_model

    other = register(train_model(SYMBOL, "naive", train_end=CUTOFF), reason="second arm")
    for arms, shadow in ([(champion, 1.0), (other, 0.0)], False), ([(champion, 0.0), (other, 1.0)], True):
        with pytest.raises(ExperimentError, match="traffic share above 0"):
            create_experiment(f"zero {shadow}", SYMBOL, arms, start_date=CUTOFF, shadow=shadow)
    assert create_experiment("shadow B", SYMBOL, [(champion, 1.0), (other, 0.0)], start_date=CUTOFF, shadow=True)


def test_critical_drift_still_waits_and_a_replay_reviewer_approves_it_into_a_test(champion, fresh_db, monkeypatch):
    import scheduled_tasks
    from core.lifecycle import approve_all

    loop_setup(monkeypatch)
    install_fake_drift(monkeypatch, lambda m, d: FakeReport(True, "critical", ["fake drift"], retrain=True))
    day = _days(1)[0]
    assert _cycle(day)["retrain"].startswith("awaiting approval")
    assert fresh_db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == 0
    lines = approve_all(day, actor="replay reviewer")
    assert len(lines) == 1 and "in a shadow A/B test" in lines[0]
    assert [j["status"] for j in _jobs(fresh_db)] == ["testing"]
    assert fresh_db.execute("SELECT actor FROM audit_log WHERE action = 'retrain_running'").fetchone()[0] == "replay reviewer"
    with pytest.raises(SystemExit) as usage:  # the simulated reviewer exists only for a replay
        scheduled_tasks.main(["--once", "--approve"])
    assert usage.value.code == 2


def test_a_replay_of_earlier_days_leaves_a_later_test_alone_and_every_look_is_valid_json(champion, fresh_db, monkeypatch):
    """Replaying days before a running test opened (a second `--replay` over an earlier range) must not look at
    it: that look had no scored day, its NaN numbers made the job's JSON invalid and SQLite refused every
    later read as a damaged database. A look with no scored day yet stores null."""
    from core.challenger import advance

    loop_setup(monkeypatch)
    days = _days(6)
    _cycle(days[3])  # the test opens on days[3]
    assert _jobs(fresh_db)[0]["status"] == "testing"
    assert advance(SYMBOL, days[3]).startswith(f"challenger {_jobs(fresh_db)[0]['challenger_id']} in test")  # no scored day
    for day in days[:3]:
        assert "s test starts on " + days[3] in advance(SYMBOL, day)
        _cycle(day)  # the whole cycle on an earlier day: no failure, the test untouched
    assert fresh_db.execute("SELECT COUNT(*) FROM retrain_jobs WHERE NOT json_valid(details_json)").fetchone()[0] == 0
    look = json.loads(fresh_db.execute("SELECT details_json FROM retrain_jobs WHERE status = 'testing'").fetchone()[0])["last_look"]
    assert look["look"] == days[3] and look["n"] == 0 and look["champion_mae"] is None
