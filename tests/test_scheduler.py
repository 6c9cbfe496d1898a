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
    from core import monitoring

    install_fake_drift(monkeypatch)
    day = _days(registry_copy)[-1]
    assert scheduled_tasks.main(["--once", "--as-of", day]) == 0
    assert "2 ok, 0 failed" in capsys.readouterr().out

    def broken(model, day, context, db):
        raise RuntimeError("feature store unreachable")

    monkeypatch.setitem(monitoring.STEP_FUNCTIONS, "backfill", broken)
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
