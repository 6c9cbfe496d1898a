"""Retraining safeguards, each shown blocking; the gate; validation window and rollback; a retrain killed mid-way."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import make_challenger_worse
from test_monitoring import FakeReport, install_fake_drift


@pytest.fixture(autouse=True)
def direct_deploy(monkeypatch):
    """These tests cover a retrain that deploys right after its gate (MLSA_CHALLENGER_AB_TEST=0); the
    challenger stage's shadow A/B test is tests/test_challenger.py's."""
    monkeypatch.setenv("MLSA_CHALLENGER_AB_TEST", "0")

SYMBOL = "MSFT"
CUTOFF = "2011-06-01"


@pytest.fixture()
def champion(fresh_db, monkeypatch):
    """A deployed naive champion (fast to train) in a private database."""
    from core.registry import deploy, register
    from core.training import train_model

    model_id = register(train_model(SYMBOL, "naive", train_end=CUTOFF), reason="test champion")
    deploy(model_id, reason="test champion", override=True)
    return model_id


def _day(offset: int) -> str:
    from core.market import load_prices

    days = load_prices(SYMBOL, start="2012-01-01").index
    return f"{days[offset]:%Y-%m-%d}"


def _drifting(severity="significant") -> FakeReport:
    return FakeReport(True, severity, ["fake drift"], retrain=True)


def _jobs(db) -> list[dict]:
    return list(db.query("SELECT * FROM retrain_jobs ORDER BY id"))


def _stub_training(monkeypatch, error: float):
    """train_model returns a naive-type challenger whose walk-forward error on every day is `error` dollars."""
    from core import training

    real = training.train_model

    def fake(symbol, model_type, train_end=None, **kwargs):
        trained = real(symbol, "naive", train_end=train_end)
        validation = trained.validation.copy()
        validation["predicted_close"] = validation["actual_close"] + error
        trained.validation = validation
        return trained

    monkeypatch.setattr(training, "train_model", fake)


def _confirmed_days(db, champion, monkeypatch, days=(0, 1, 2)):
    """Drift checks on consecutive days, each with a recorded trigger, through the real auto_retrain."""
    from core.drift import check_model
    from core.lifecycle import auto_retrain

    decisions = []
    for offset in days:
        report = check_model(champion, _day(offset), db=db)
        decisions.append(auto_retrain(champion, _day(offset), report, db=db))
    return decisions


def test_feature_flag_off_blocks_automatic_retraining(champion, fresh_db, monkeypatch):
    install_fake_drift(monkeypatch, lambda m, d: _drifting())
    monkeypatch.setenv("MLSA_RETRAIN_CONFIRMATIONS", "1")
    decisions = _confirmed_days(fresh_db, champion, monkeypatch, days=(0,))
    assert decisions[0].startswith("blocked: automatic retraining is off")
    assert fresh_db["models"].count == 1 and [j["status"] for j in _jobs(fresh_db)] == ["blocked"]


def test_confirmation_needs_consecutive_checks(champion, fresh_db, monkeypatch):
    monkeypatch.setenv("MLSA_ENABLE_AUTO_RETRAIN", "1")
    _stub_training(monkeypatch, error=-0.001)  # near-perfect: passes the gate once it runs
    install_fake_drift(monkeypatch, lambda m, d: _drifting())
    decisions = _confirmed_days(fresh_db, champion, monkeypatch)
    assert decisions[0].startswith("blocked: awaiting confirmation: trigger held on 1 of 3")
    assert decisions[1].startswith("blocked: awaiting confirmation: trigger held on 2 of 3")
    assert decisions[2].startswith("validating: passed")
    from core.lifecycle import auto_retrain
    from core.drift import check_model

    # the same day again: no second job, the earlier decision is returned
    again = auto_retrain(champion, _day(2), check_model(champion, _day(2), db=fresh_db, store=False), db=fresh_db)
    assert "decided earlier today" in again and len(_jobs(fresh_db)) == 3


def test_a_day_without_trigger_resets_the_confirmation(champion, fresh_db, monkeypatch):
    monkeypatch.setenv("MLSA_ENABLE_AUTO_RETRAIN", "1")
    calm = {_day(1)}
    install_fake_drift(monkeypatch, lambda m, d: FakeReport() if d in calm else _drifting())
    decisions = _confirmed_days(fresh_db, champion, monkeypatch, days=(0, 1, 2, 3))
    assert decisions[1] == "no retrain needed"
    assert decisions[3].startswith("blocked: awaiting confirmation: trigger held on 2 of 3")


def test_cooldown_blocks_a_second_automatic_retrain(champion, fresh_db, monkeypatch):
    monkeypatch.setenv("MLSA_ENABLE_AUTO_RETRAIN", "1")
    monkeypatch.setenv("MLSA_RETRAIN_CONFIRMATIONS", "1")
    _stub_training(monkeypatch, error=5.0)  # rejected by the gate, but it did retrain
    install_fake_drift(monkeypatch, lambda m, d: _drifting())
    decisions = _confirmed_days(fresh_db, champion, monkeypatch, days=(0, 2))
    assert decisions[0].startswith("rejected:")
    assert decisions[1].startswith("blocked: cooldown: last automatic retrain on " + _day(0))


def test_validation_gate_rejects_and_keeps_the_challenger_as_rejected(champion, fresh_db):
    from core.registry import deployed_model, get_model
    from core.lifecycle import retrain_now

    # a naive challenger ties the naive champion and naive baseline: it beats neither by the margin
    result = retrain_now(SYMBOL, _day(30), actor="test")
    assert result["status"] == "rejected" and not result["gate"].passed
    assert result["gate"].challenger_mae == pytest.approx(result["gate"].naive_mae)
    challenger = get_model(result["challenger_id"])
    assert challenger["status"] == "rejected" and challenger["parent_id"] == champion  # shown as what happened
    assert "rejected: the validation gate" in challenger["reason"]
    assert deployed_model(SYMBOL)["model_id"] == champion
    job = _jobs(fresh_db)[-1]
    assert job["status"] == "rejected" and job["challenger_id"] == result["challenger_id"]


def test_gate_numbers_against_a_hand_computation(champion, fresh_db, monkeypatch):
    from core import training
    from core.config import get_settings
    from core.retrain import HOLDOUT_DAYS, validation_gate

    _stub_training(monkeypatch, error=0.5)
    trained = training.train_model(SYMBOL, "naive", train_end=_day(30))
    gate = validation_gate(trained, champion, get_settings().retrain_margin)
    holdout = trained.validation.iloc[-HOLDOUT_DAYS:]
    naive = np.mean(np.abs(holdout["last_close"] - holdout["actual_close"]))
    assert gate.challenger_mae == pytest.approx(0.5)
    assert gate.champion_mae == pytest.approx(naive) and gate.naive_mae == pytest.approx(naive)
    assert gate.passed == (0.5 <= naive * (1 - get_settings().retrain_margin))


def _recent_champion(train_offset: int) -> str:
    """A deployed naive champion trained to `_day(train_offset)`: its window overlaps a later challenger's holdout."""
    from core.registry import deploy, register
    from core.training import train_model

    model_id = register(train_model(SYMBOL, "naive", train_end=_day(train_offset)), reason="recent champion")
    deploy(model_id, reason="recent champion", override=True)
    return model_id


def test_gate_scores_the_champion_only_on_days_it_was_not_trained_on(champion, fresh_db, monkeypatch):
    from core import training
    from core.config import get_settings
    from core.retrain import HOLDOUT_DAYS, validation_gate

    recent = _recent_champion(10)
    _stub_training(monkeypatch, error=0.5)
    trained = training.train_model(SYMBOL, "naive", train_end=_day(40))
    gate = validation_gate(trained, recent, get_settings().retrain_margin)
    # rows _day(10) .. _day(39) (the last row's target is the close of _day(40)): out of sample for both
    holdout = trained.validation.loc[_day(10):_day(39)]
    assert (gate.holdout_start, gate.holdout_end, gate.holdout_days) == (_day(10), _day(39), 30)
    assert gate.champion_in_sample_days == HOLDOUT_DAYS - 30
    naive = np.mean(np.abs(holdout["last_close"] - holdout["actual_close"]))
    assert gate.champion_mae == pytest.approx(naive) and gate.challenger_mae == pytest.approx(0.5)
    assert "over 30 days" in gate.reason


def test_gate_refuses_to_judge_with_too_few_out_of_sample_days(champion, fresh_db, monkeypatch):
    from core import training
    from core.retrain import MIN_HOLDOUT_DAYS, validation_gate

    recent = _recent_champion(10)
    _stub_training(monkeypatch, error=-0.001)  # near-perfect, yet there is nothing fair to compare it on
    trained = training.train_model(SYMBOL, "naive", train_end=_day(10 + MIN_HOLDOUT_DAYS - 1))
    gate = validation_gate(trained, recent, 0.02)
    assert not gate.passed and gate.reason.startswith("rejected: too soon to judge")
    assert gate.holdout_days == MIN_HOLDOUT_DAYS - 1


def test_automatic_retrain_too_soon_after_the_champion_is_blocked_untrained(champion, fresh_db, monkeypatch):
    from core.retrain import MIN_HOLDOUT_DAYS

    monkeypatch.setenv("MLSA_ENABLE_AUTO_RETRAIN", "1")
    monkeypatch.setenv("MLSA_RETRAIN_CONFIRMATIONS", "1")
    recent = _recent_champion(0)
    install_fake_drift(monkeypatch, lambda m, d: _drifting())
    decisions = _confirmed_days(fresh_db, recent, monkeypatch, days=(MIN_HOLDOUT_DAYS - 1, MIN_HOLDOUT_DAYS))
    assert decisions[0].startswith(f"blocked: too soon: {recent} was trained to {_day(0)}")
    assert f"{MIN_HOLDOUT_DAYS - 1} so far" in decisions[0]
    assert not decisions[1].startswith("blocked")  # the 20th out-of-sample day: the retrain runs
    assert fresh_db["models"].count == 3  # the first champion, the recent one, one challenger


def test_critical_drift_waits_for_approval(champion, fresh_db, monkeypatch):
    from core.registry import deployed_model
    from core.retrain_jobs import approval_queue
    from core.lifecycle import approve, auto_retrain
    from core.retrain import decline

    monkeypatch.setenv("MLSA_ENABLE_AUTO_RETRAIN", "1")
    monkeypatch.setenv("MLSA_RETRAIN_CONFIRMATIONS", "1")
    _stub_training(monkeypatch, error=-0.001)
    install_fake_drift(monkeypatch, lambda m, d: _drifting("critical"))
    decision = _confirmed_days(fresh_db, champion, monkeypatch, days=(0,))[0]
    assert decision.startswith("awaiting approval")
    assert deployed_model(SYMBOL)["model_id"] == champion and fresh_db["models"].count == 1
    queue = approval_queue()
    assert len(queue) == 1
    assert fresh_db.execute("SELECT severity FROM alerts WHERE kind = 'approval_needed'").fetchone()[0] == "critical"
    # a second trigger while one waits does not queue another
    assert "already awaits approval" in auto_retrain(champion, _day(5), _drifting("critical"), db=fresh_db)
    result = approve(int(queue["id"].iloc[0]), actor="reviewer")
    assert result["status"] == "validating" and deployed_model(SYMBOL)["model_id"] == result["challenger_id"]
    with pytest.raises(ValueError, match="not awaiting approval"):
        decline(int(queue["id"].iloc[0]))


def test_validation_window_rolls_back_a_worse_model(champion, fresh_db, monkeypatch):
    from core import lifecycle, retrain
    from core.registry import deployed_model, get_model

    _stub_training(monkeypatch, error=-0.001)
    result = lifecycle.retrain_now(SYMBOL, _day(30), actor="test")
    challenger = result["challenger_id"]
    assert deployed_model(SYMBOL)["model_id"] == challenger
    assert retrain.check_validation_window(SYMBOL, _day(32)) == "2 of 5 days"
    make_challenger_worse(monkeypatch, challenger)
    decision = retrain.check_validation_window(SYMBOL, _day(40))
    assert decision.startswith("rolled back")
    assert deployed_model(SYMBOL)["model_id"] == champion
    assert get_model(challenger)["status"] == "rolled_back"
    assert _jobs(fresh_db)[-1]["status"] == "rolled_back"
    assert fresh_db.execute("SELECT severity FROM alerts WHERE kind = 'rollback'").fetchone()[0] == "critical"
    assert retrain.check_validation_window(SYMBOL, _day(41)) is None  # closed


def test_validation_window_keeps_a_model_that_holds_up(champion, fresh_db, monkeypatch):
    from core import lifecycle, retrain
    from core.registry import deployed_model

    _stub_training(monkeypatch, error=-0.001)
    challenger = lifecycle.retrain_now(SYMBOL, _day(30), actor="test")["challenger_id"]
    # both are naive models: the same live MAE, not worse by the margin
    assert retrain.check_validation_window(SYMBOL, _day(40)).startswith("validated")
    assert deployed_model(SYMBOL)["model_id"] == challenger


def test_retrain_killed_in_training_leaves_the_registry_consistent(champion, fresh_db, monkeypatch):
    from core import training
    from core.registry import deployed_model
    from core.retrain_jobs import RetrainError
    from core.lifecycle import retrain_now
    from core.config import get_settings

    def dies(*args, progress=None, **kwargs):
        progress(0.3, "Validating fold 2 of 5")
        raise MemoryError("killed while fitting")

    monkeypatch.setattr(training, "train_model", dies)
    models_before = fresh_db["models"].count
    with pytest.raises(RetrainError, match="killed while fitting"):
        retrain_now(SYMBOL, _day(30), actor="test")
    assert fresh_db["models"].count == models_before
    assert deployed_model(SYMBOL)["model_id"] == champion
    job = _jobs(fresh_db)[-1]
    assert job["status"] == "failed" and job["finished_at"] and job["challenger_id"] is None
    actions = [r["action"] for r in fresh_db.query("SELECT action FROM audit_log ORDER BY id")]
    assert actions[-2:] == ["retrain_running", "retrain_failed"]
    assert sorted(p.name for p in get_settings().models_dir.iterdir()) == [champion]


def test_retrain_failing_at_deploy_keeps_the_champion(champion, fresh_db, monkeypatch):
    from core import lifecycle, registry, retrain
    from core.registry import deployed_model, get_model

    _stub_training(monkeypatch, error=-0.001)

    def deploy_dies(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(retrain, "deploy", deploy_dies)
    with pytest.raises(retrain.RetrainError, match="disk gone"):
        lifecycle.retrain_now(SYMBOL, _day(30), actor="test")
    job = _jobs(fresh_db)[-1]
    assert deployed_model(SYMBOL)["model_id"] == champion
    candidates = registry.list_models(SYMBOL, "candidate")
    assert len(candidates) == 1 and candidates[0]["parent_id"] == champion
    assert job["status"] == "failed" and job["challenger_id"] == candidates[0]["model_id"]
    assert get_model(champion)["status"] == "deployed"


def test_the_retrain_summary_speaks_once_and_its_gate_table_is_formatted():
    """The page's words say "rejected" once, and every gate column the page shows has a $ / % format."""
    from core.lifecycle import retrain_summary
    from core.model_view import GATE_FORMATS
    from core.retrain import GateResult

    gate = GateResult(False, 32.467, 32.968, 31.9, 0.02, 60, "2018-10-04", "2018-12-31", 0,
                      "rejected: does not beat the champion by 2% ($32.467 vs $32.968) over 60 days")
    summary = retrain_summary("^GSPC", {"gate": gate, "challenger_id": "rf_v2", "status": "rejected", "decision": ""})
    assert summary["message"].count("rejected") == 1 and "does not beat the champion by 2%" in summary["message"]
    assert set(GATE_FORMATS) == set(summary["gate"]) - {"passed"}
