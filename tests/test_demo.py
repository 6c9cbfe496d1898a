"""The demo build: failures in worker processes are named, never lost."""
from __future__ import annotations

from core import demo


def test_a_failing_demo_unit_is_named_and_does_not_break_the_build():
    """A worker's exception comes back as a FAILED line (some exceptions cannot cross processes)."""
    def broken(_report):
        raise RuntimeError("disk full while training XYZ")

    result, lines = demo._collect(broken)
    assert result is None and lines == ["  FAILED: RuntimeError: disk full while training XYZ"]
    reported: list[str] = []
    assert demo._relay(["  ok", *lines], reported.append) == 1 and reported[-1].startswith("  FAILED")


def test_the_loop_window_runs_the_real_cycle_with_automatic_retraining_and_a_reviewer(registry_copy, monkeypatch):
    """The demo's loop window: the daily cycle retrains on drift (automatic retraining on only inside it), the
    simulated reviewer approves what critical drift queued, and the app's setting is as it was afterwards."""
    import os

    from test_monitoring import FakeReport, install_fake_drift

    from core import training
    from core.market import load_prices
    from core.store import get_db

    monkeypatch.delenv("MLSA_ENABLE_AUTO_RETRAIN", raising=False)
    monkeypatch.setenv("MLSA_RETRAIN_CONFIRMATIONS", "1")
    real = training.train_model  # a naive challenger: the loop's wiring is under test here, not the forest
    monkeypatch.setattr(training, "train_model", lambda symbol, model_type, train_end=None, **kw: real(symbol, "naive", train_end=train_end))
    install_fake_drift(monkeypatch, lambda m, d: FakeReport(True, "critical", ["fake drift"], retrain=True))
    days = list(load_prices("AAPL", start=demo.demo_cutoff("AAPL")).index[121:123])  # after the test registry's replay
    lines: list[str] = []
    demo.run_loop_window("AAPL", days, lines.append)
    assert "MLSA_ENABLE_AUTO_RETRAIN" not in os.environ
    jobs = list(get_db().query("SELECT status, trigger, json_extract(details_json, '$.as_of') AS as_of, "
                               "json_extract(details_json, '$.approved_by') AS approved_by FROM retrain_jobs ORDER BY id"))
    first = jobs[0]
    assert (first["trigger"], first["as_of"], first["approved_by"]) == ("drift", f"{days[0]:%Y-%m-%d}", demo.LOOP_REVIEWER)
    assert first["status"] not in ("awaiting_approval", "blocked")  # critical drift queued it; the reviewer ran it
    assert lines[0].startswith(f"  loop window {days[0]:%Y-%m-%d} to {days[-1]:%Y-%m-%d} for AAPL")
