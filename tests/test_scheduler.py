"""scheduled_tasks.py: --once exit codes, --replay, the lock against two schedulers, SIGTERM between steps."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_monitoring import install_fake_drift

ROOT = Path(__file__).resolve().parent.parent
SCHEDULER_RUNS = "SELECT COUNT(*) FROM audit_log WHERE action = 'daily_cycle' AND actor = 'scheduler'"  # not the demo's


def _days(db, symbol="MSFT", n=3) -> list[str]:
    return [r[0] for r in db.execute("SELECT DISTINCT as_of FROM predictions WHERE symbol = ? ORDER BY as_of DESC LIMIT ?",
                                     [symbol, n]).fetchall()][::-1]


def test_once_returns_zero_then_one_when_a_model_fails(registry_copy, monkeypatch, capsys):
    import scheduled_tasks
    from core import cycle

    install_fake_drift(monkeypatch)
    day = _days(registry_copy)[-1]
    assert scheduled_tasks.main(["--once", "--as-of", day]) == 0
    assert "2 ok, 0 failed" in capsys.readouterr().out

    def broken(model, day, context, db):
        raise RuntimeError("feature store unreachable")

    monkeypatch.setitem(cycle.STEP_FUNCTIONS, "backfill", broken)
    assert scheduled_tasks.main(["--once", "--as-of", day]) == 1
    out = capsys.readouterr().out
    assert "0 ok, 2 failed" in out and "feature store unreachable" in out


def test_replay_runs_one_cycle_per_trading_day(registry_copy, monkeypatch, capsys):
    import scheduled_tasks

    install_fake_drift(monkeypatch)
    days = _days(registry_copy, n=4)
    assert scheduled_tasks.main(["--replay", days[0], days[-1]]) == 0
    captured = capsys.readouterr()
    assert f"Replayed {len(days)} of {len(days)} trading days" in captured.out
    assert f"] {len(days)}/{len(days)}" in captured.err  # the progress bar
    runs = [r[0] for r in registry_copy.execute(
        "SELECT json_extract(details_json, '$.as_of') FROM audit_log WHERE action = 'daily_cycle' AND actor = 'scheduler' "
        "ORDER BY id").fetchall()]  # the demo's own cycles are recorded as "scheduler (demo replay)"
    assert runs == days


def test_a_second_scheduler_is_refused_while_the_lock_is_held(fresh_db):
    import scheduled_tasks

    with scheduled_tasks.scheduler_lock() as path:
        done = subprocess.run([sys.executable, "scheduled_tasks.py", "--once", "--as-of", "2012-06-01"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, env=os.environ.copy())
        assert done.returncode == scheduled_tasks.EXIT_LOCKED
        assert "Another scheduler is running" in done.stderr and str(os.getpid()) in done.stderr
        assert path.exists()
    with scheduled_tasks.scheduler_lock():  # released: can be taken again
        pass


def test_sigterm_stops_a_replay_cleanly_between_steps(registry_copy):
    days = _days(registry_copy, n=200)
    process = subprocess.Popen([sys.executable, "scheduled_tasks.py", "--replay", days[0], days[-1]], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the first cycle is recorded
        if registry_copy.execute(SCHEDULER_RUNS).fetchone()[0]:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert "Stopped early" in out, err[-2000:]
    runs = registry_copy.execute(SCHEDULER_RUNS).fetchone()[0]
    assert 1 <= runs < len(days)
    assert "Traceback" not in err
    assert process.returncode in (0, 1)  # a clean exit, not killed by the signal


def _counts(db) -> dict[str, int]:
    tables = ("predictions", "drift_checks", "alerts", "daily_metrics", "retrain_jobs", "audit_log")
    return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


def test_once_without_as_of_runs_on_the_last_day_of_the_data_not_the_clock(registry_copy, monkeypatch, capsys):
    import scheduled_tasks
    from core.market import last_trading_day

    install_fake_drift(monkeypatch)
    last = f"{max(last_trading_day(s) for s in ('AAPL', 'MSFT')):%Y-%m-%d}"
    assert scheduled_tasks.main(["--once"]) == scheduled_tasks.EXIT_OK
    assert capsys.readouterr().out.startswith(f"{last}: 2 ok")
    run = registry_copy.execute("SELECT details_json FROM audit_log WHERE action = 'daily_cycle' ORDER BY id DESC").fetchone()[0]
    assert f'"as_of": "{last}"' in run
    newest = registry_copy.execute("SELECT MAX(as_of) FROM drift_checks").fetchone()[0]
    assert newest <= last  # nothing dated after the data, whatever the wall clock says


def test_a_day_beyond_the_data_exits_5_names_the_last_day_and_stores_nothing(registry_copy, monkeypatch, capsys):
    import scheduled_tasks
    from core.market import last_trading_day

    install_fake_drift(monkeypatch)
    last = f"{max(last_trading_day(s) for s in ('AAPL', 'MSFT')):%Y-%m-%d}"
    before = _counts(registry_copy)
    assert scheduled_tasks.main(["--once", "--as-of", "2030-01-01"]) == scheduled_tasks.EXIT_BEYOND_DATA
    err = capsys.readouterr().err
    assert "2030-01-01 is after the last trading day in the data" in err and last in err
    assert scheduled_tasks.main(["--replay", last, "2030-01-01"]) == scheduled_tasks.EXIT_BEYOND_DATA
    assert last in capsys.readouterr().err
    assert _counts(registry_copy) == before


def test_exit_codes_are_distinct_and_documented(fresh_db):
    import scheduled_tasks

    codes = (scheduled_tasks.EXIT_OK, scheduled_tasks.EXIT_FAILED, scheduled_tasks.EXIT_USAGE, scheduled_tasks.EXIT_LOCKED,
             scheduled_tasks.EXIT_DB_UNAVAILABLE, scheduled_tasks.EXIT_BEYOND_DATA)
    assert codes == (0, 1, 2, 3, 4, 5)
    shown = subprocess.run([sys.executable, "scheduled_tasks.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                           timeout=60, env=os.environ.copy()).stdout
    for code in codes:
        assert f"\n  {code}  " in shown
    readme = (ROOT / "README.md").read_text()
    assert "| 3 | another scheduler" in readme and "| 5 | the date is beyond the data" in readme
    for bad in (["--replay", "2012-02-01", "2012-01-01"], ["--as-of", "2012-01-01"], ["--once", "--as-of", "soon"], ["--bogus"]):
        done = subprocess.run([sys.executable, "scheduled_tasks.py", *bad], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env=os.environ.copy())
        assert done.returncode == scheduled_tasks.EXIT_USAGE != scheduled_tasks.EXIT_LOCKED, (bad, done.stderr)
        assert "Traceback" not in done.stderr
