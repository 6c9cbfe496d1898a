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


def test_the_demo_direction_model_is_deployed_beside_the_price_model_and_served_once_a_day(registry_copy):
    """What the demo does for `DIRECTION_SYMBOL` (IBM; the test registry's MSFT here): a direction model trained at
    the cutoff, certified, deployed beside the price model; the replay then serves one P(up) per day beside the
    price forecast, from its training window's last day (the next close is out of sample), scored in daily_metrics
    and shown on Home."""
    import pandas as pd

    from core.cycle import backfill_history
    from core.dashboard import load_dashboard
    from core.market import load_prices
    from core.registry import deployed_model

    db, price = registry_copy, deployed_model("MSFT")["model_id"]
    last_served = db.execute("SELECT MAX(as_of) FROM predictions WHERE symbol = 'MSFT'").fetchone()[0]
    cutoff = pd.Timestamp(last_served)
    lines: list[str] = []
    model_id = demo.deploy_direction("MSFT", cutoff, lines.append)
    assert deployed_model("MSFT", kind="direction")["model_id"] == model_id and deployed_model("MSFT")["model_id"] == price
    assert lines and model_id in lines[0] and "for the better baseline" in lines[0]
    days = load_prices("MSFT", start=cutoff).index[:12]
    assert demo.replay("MSFT", days[0], days[-1]) == len(days)
    assert demo.replay("MSFT", days[0], days[-1]) == len(days)  # a second replay serves nothing new
    backfill_history(days[0], days[-1], symbols=["MSFT"])
    served = pd.read_sql_query("SELECT as_of, model_id, p_up, actual_close FROM predictions WHERE symbol = 'MSFT' "
                               "AND served = 1 AND as_of >= ?", db.conn, params=[f"{days[0]:%Y-%m-%d}"])
    direction, prices = served[served["p_up"].notna()], served[served["p_up"].isna()]
    assert list(direction["as_of"]) == [f"{d:%Y-%m-%d}" for d in days] and set(direction["model_id"]) == {model_id}
    assert list(prices["as_of"]) == [f"{d:%Y-%m-%d}" for d in days] and set(prices["model_id"]) == {price}  # once a day
    assert direction["p_up"].between(0, 1).all() and direction["actual_close"].notna().sum() == len(days) - 1
    scored = db.execute("SELECT COUNT(*) FROM daily_metrics WHERE model_id = ? AND brier IS NOT NULL", [model_id]).fetchone()[0]
    assert scored == len(days) - 1
    home = load_dashboard(db=db).tickers.set_index("ticker")
    assert home.loc["MSFT", "direction model"] == model_id
    assert home.loc["MSFT", "direction accuracy (30 d)"].endswith(f"({len(days) - 1} d)")
