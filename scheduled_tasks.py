"""The scheduler: runs the daily monitoring cycle (core.cycle.run_daily_cycle) on a `schedule` loop.

    python scheduled_tasks.py                      # loop: the cycle every day at MLSA_DRIFT_CHECK_TIME (06:00)
    python scheduled_tasks.py --once [--as-of D]   # one cycle and exit (cron); default: the data's last day
    python scheduled_tasks.py --replay START END   # the cycle for each trading day in [START, END]
                                   [--approve]   #   and a simulated reviewer approving the queue
    python scheduled_tasks.py --retrain-all [TICKER ...] [--as-of D]
                                                   # retrain those tickers' deployed models (default: all) as a
                                                   # batch, each through Retrain Now's gate; on the Dask cluster
                                                   # MLSA_DASK_SCHEDULER names, the trainings run side by side

"Today" is the last trading day the data has (per ticker), never the wall clock; a day beyond the
data is refused. One scheduler per database file: an exclusive `flock` on `<real db path>.scheduler.lock`
(the path with every symlink and `..` resolved) and on a lock named after the file's device and inode
(so a bind mount or hard link of the same file is the same database), released by the OS when the
process dies. SIGTERM and Ctrl-C stop the cycle cleanly between two steps.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import schedule

from core.bulk_retrain import retrain_all
from core.cluster import ClusterUnavailable
from core.config import get_settings, log_setting_names
from core.drift import BeyondDataError, check_within_data, data_ends
from core.market import MarketDataError, load_prices
from core.loop_view import decisions_worth
from core.cycle import run_daily_cycle
from core.lifecycle import approve_all
from core.registry import list_models
from core.store import check_writable, get_db
from core.store_faults import StoreError, describe_error, scheduler_lock_path

log = logging.getLogger("scheduler")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_DB_UNAVAILABLE, EXIT_BEYOND_DATA = 0, 1, 2, 3, 4, 5
EXIT_CLUSTER_UNAVAILABLE = 6
EXIT_CODES = """exit codes:
  0  every model's cycle succeeded (or the loop was stopped)
  1  a cycle step failed for at least one model (the failures are printed); with --retrain-all,
     a ticker failed or was refused
  2  usage error: bad option, bad date, START after END
  3  another scheduler holds the lock on this database file
  4  the database is unavailable: busy, read-only, disk full or damaged (the line says which)
  5  the date is beyond the data: the message names the data's last trading day; nothing was stored
  6  MLSA_DASK_SCHEDULER names a Dask cluster that does not answer (or runs other code); no model was run
"""


class SchedulerLocked(RuntimeError):
    """Another scheduler holds the lock on this database."""


def lock_path() -> Path:
    """The lock beside the database's real path (see `core.store_faults.scheduler_lock_path`)."""
    return scheduler_lock_path(get_settings().db_path)


def _identity_lock_path(db_path: Path) -> Path | None:
    """A lock named after the database file's (device, inode), so two paths that reach the same file
    without a symlink (a bind mount, a hard link) still share one scheduler. None before the file exists."""
    try:
        st = os.stat(db_path)
    except OSError:
        return None
    return Path(tempfile.gettempdir()) / f"mlsa-scheduler-{st.st_dev}-{st.st_ino}.lock"


def _take(path: Path, handles: list) -> None:
    """An exclusive, non-blocking flock on `path`, with our pid in the file; SchedulerLocked if taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise SchedulerLocked(f"Another scheduler is running on this database (pid {holder}, lock {path}).") from exc
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    handles.append(handle)


@contextlib.contextmanager
def scheduler_lock(path: Path | None = None) -> Iterator[Path]:
    """Hold the scheduler's locks for its lifetime: `path` (default: beside the real database path) and,
    once the database file exists, the one keyed by its device and inode."""
    db_path = Path(os.path.realpath(get_settings().db_path))
    paths = [path or lock_path(), *([p] if path is None and (p := _identity_lock_path(db_path)) else [])]
    handles: list = []
    try:
        for each in paths:
            _take(each, handles)
        yield paths[0]
    finally:
        for handle in handles:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM / SIGINT set `stop`; the cycle checks it between steps and the loop exits."""
    def handler(signum, _frame):
        log.info("received %s: stopping after the current step", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def deployed_symbols() -> list[str]:
    return sorted({m["symbol"] for m in list_models(status="deployed")})


def data_ends_of_deployed() -> dict[str, pd.Timestamp]:
    """The last data day of each deployed ticker (a ticker whose data cannot be read is left out: its
    model's steps fail and say why)."""
    ends: dict[str, pd.Timestamp] = {}
    for symbol in deployed_symbols():
        with contextlib.suppress(MarketDataError):
            ends.update(data_ends([symbol]))
    return ends


def trading_days(start, end) -> list[pd.Timestamp]:
    """Trading days in [start, end] of any ticker with a deployed model (tickers' calendars differ)."""
    days: set[pd.Timestamp] = set()
    for symbol in deployed_symbols():
        try:
            days.update(load_prices(symbol, start=start, end=end).index)
        except MarketDataError:
            continue
    return sorted(days)


def _progress_bar(done: int, total: int, label: str, width: int = 30) -> None:
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label}   ")
    sys.stderr.flush()


def run_once(as_of, stop: threading.Event, refresh_prices: bool = False) -> int:
    """One cycle; `as_of=None` is the data's last day (per ticker)."""
    summary = run_daily_cycle(as_of, should_stop=stop.is_set, refresh_prices=refresh_prices)
    if summary["as_of"] is None:
        print("No deployed model: nothing to run (deploy one on Model Management).", flush=True)
        return EXIT_OK
    skipped = summary.get("skipped", [])
    print(f"{summary['as_of']}: {summary['ok']} ok, {summary['failed']} failed"
          + (f", {len(skipped)} skipped" if skipped else "") + f" in {summary['seconds']:.1f} s"
          + (" (stopped)" if summary["stopped"] else ""), flush=True)
    for line in summary.get("reconciled", []):
        print(f"  reconcile: {line}", flush=True)
    for entry in skipped:
        print(f"  {entry['model_id']}: skipped, {entry['reason']}", flush=True)
    for entry in summary["models"]:
        if entry.get("as_of") and entry["as_of"] != summary["as_of"]:
            print(f"  {entry['model_id']}: its data ends {entry['as_of']}, cycle run for that day", flush=True)
        for step, why in entry.get("skipped_steps", {}).items():
            print(f"  {entry['model_id']}: {step} skipped, {why}", flush=True)
        if entry["status"] == "failed":
            print(f"  {entry['model_id']}: " + "; ".join(f"{k}: {v}" for k, v in entry["errors"].items()), flush=True)
    return EXIT_FAILED if summary["failed"] else EXIT_OK


def retrain_batch(symbols: list[str], as_of) -> int:
    """`--retrain-all`: one line per ticker; exit 1 when a ticker failed or was refused (nothing trained)."""
    outcome = retrain_all(symbols or None, as_of, actor="scheduler", report=lambda line: print(f"  {line}", flush=True))
    results = outcome["results"]
    counts = Counter(r["status"] for r in results)
    print(f"retrained {len(results)} ticker(s) on {outcome['ran_on']}: "
          + (", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no deployed model"), flush=True)
    return EXIT_FAILED if counts["failed"] or counts["refused"] else EXIT_OK


def print_loop(start, end) -> None:
    """The loops the replay started: trigger, gate, shadow test, decision, and what it was worth afterwards."""
    worth = decisions_worth(start, end)
    if worth.empty:
        print("No retrain was started in this range (see Monitoring for the blocked decisions).", flush=True)
        return
    print(f"{len(worth)} loop(s) started:", flush=True)
    for row in worth.to_dict("records"):
        print(f"  {row['ticker']} job {row['job']}: {row['trigger']} trigger on {row['retrained on']} -> {row['status']}: "
              f"{row['decision']}", flush=True)
        if row.get("days after") == row.get("days after"):  # not NaN: the decision's worth was measured
            print(f"    over the {row['days after']:.0f} trading days after {row['decided on']}: champion MAE "
                  f"${row['champion MAE $']:.3f}, challenger ${row['challenger MAE $']:.3f}, naive ${row['naive MAE $']:.3f}; "
                  f"the decision was worth ${row['worth $']:+.3f} per day", flush=True)


def replay(start, end, stop: threading.Event, approve: bool = False) -> int:
    check_within_data(end, data_ends_of_deployed())  # BeyondDataError before any cycle runs
    days = trading_days(start, end)
    if not days:
        print(f"No trading days between {start:%Y-%m-%d} and {end:%Y-%m-%d} for the deployed tickers.", file=sys.stderr)
        return EXIT_USAGE
    failed_days, started, done = 0, time.perf_counter(), 0
    for done, day in enumerate(days, start=1):
        if stop.is_set():
            done -= 1
            break
        summary = run_daily_cycle(day, should_stop=stop.is_set)
        failed_days += bool(summary["failed"])
        if approve:
            for line in approve_all(day, actor="replay (--approve: simulated reviewer)"):
                log.warning("%s %s", f"{day:%Y-%m-%d}", line)
        _progress_bar(done, len(days), f"{day:%Y-%m-%d} ok={summary['ok']} failed={summary['failed']}"
                      f" skipped={len(summary.get('skipped', []))}")
    sys.stderr.write("\n")
    print(f"Replayed {done} of {len(days)} trading days in {time.perf_counter() - started:.0f} s; "
          f"{failed_days} day(s) with a failed model." + (" Stopped early." if stop.is_set() else ""), flush=True)
    print_loop(start, end)
    return EXIT_FAILED if failed_days else EXIT_OK


def loop(stop: threading.Event) -> int:
    settings = get_settings()

    def job() -> None:
        # live prices are refreshed first, so "today" is today once its close is in; never the clock itself
        try:
            run_once(None, stop, refresh_prices=not settings.offline)
        except (StoreError, ClusterUnavailable) as exc:  # the loop outlives a busy database or a cluster that is
            log.error("daily cycle not run: %s", exc)      # down: the next day tries again

    schedule.every().day.at(settings.drift_check_time).do(job)
    log.info("scheduler started: daily cycle at %s (next run %s)", settings.drift_check_time, schedule.next_run())
    while not stop.is_set():
        schedule.run_pending()
        stop.wait(timeout=min(30.0, max(1.0, schedule.idle_seconds() or 1.0)))
    schedule.clear()
    log.info("scheduler stopped")
    return EXIT_OK


def _date(parser: argparse.ArgumentParser, value: str, name: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError):
        parser.error(f"{name} {value!r} is not a date (use YYYY-MM-DD)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one daily cycle and exit (for cron)")
    mode.add_argument("--replay", nargs=2, metavar=("START", "END"), help="run the cycle for each trading day in the range")
    mode.add_argument("--retrain-all", nargs="*", metavar="TICKER",
                      help="retrain the deployed model of each TICKER (none given: every deployed ticker) through the "
                           "validation gate, as a batch; on MLSA_DASK_SCHEDULER's cluster when set")
    parser.add_argument("--as-of", help="the day of the --once cycle or --retrain-all "
                                        "(default: the last trading day of the data)")
    parser.add_argument("--approve", action="store_true",
                        help="during --replay, approve each day's approval queue (a simulated reviewer, named in the audit log)")
    parser.add_argument("--verbose", action="store_true", help="log one line per model per step during --replay too")
    args = parser.parse_args(argv)  # a usage error exits with 2 (argparse)
    if args.approve and not args.replay:
        parser.error("--approve goes with --replay")
    if args.as_of and not (args.once or args.retrain_all is not None):
        parser.error("--as-of goes with --once or --retrain-all")
    as_of = _date(parser, args.as_of, "--as-of") if args.as_of else None
    start = end = None
    if args.replay:
        start, end = (_date(parser, v, name) for v, name in zip(args.replay, ("START", "END")))
        if start > end:
            parser.error(f"START {args.replay[0]} is after END {args.replay[1]}")
    quiet = args.replay and not args.verbose
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_setting_names(log)  # which name (MLSA_* or the conventional one) set each aliased setting; names only
    stop = threading.Event()
    install_stop_handlers(stop)
    try:
        get_db()  # opens (and creates) the file first, so the lock can be keyed by its inode
        with scheduler_lock():
            check_writable()  # a busy or read-only database is said now, not after minutes of failing steps
            if args.once:
                return run_once(as_of, stop)
            if args.replay:
                return replay(start, end, stop, approve=args.approve)
            if args.retrain_all is not None:
                return retrain_batch(args.retrain_all, as_of)
            return loop(stop)
    except SchedulerLocked as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_LOCKED
    except (StoreError, OSError) as exc:  # OSError: the lock file on a read-only or full disk
        message = describe_error(exc)
        if message is None:
            raise
        print(f"database unavailable: {message}", file=sys.stderr)
        return EXIT_DB_UNAVAILABLE
    except BeyondDataError as exc:
        print(f"date beyond the data: {exc}", file=sys.stderr)
        return EXIT_BEYOND_DATA
    except ClusterUnavailable as exc:
        print(f"cluster unavailable: {exc}", file=sys.stderr)
        return EXIT_CLUSTER_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
