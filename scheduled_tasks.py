"""The scheduler: runs the daily monitoring cycle (core.monitoring.run_daily_cycle) on a `schedule` loop.

    python scheduled_tasks.py                      # loop: the cycle every day at MLSA_DRIFT_CHECK_TIME (06:00)
    python scheduled_tasks.py --once [--as-of D]   # one cycle and exit (cron); exit 1 if any model failed
    python scheduled_tasks.py --replay START END   # the cycle for each trading day in [START, END]

A lock file beside the database (`<db>.scheduler.lock`, an exclusive `flock`, released by the OS
when the process dies) keeps two schedulers from running at once. SIGTERM and Ctrl-C stop the
cycle cleanly between two steps.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import schedule

from core.config import get_settings
from core.market import MarketDataError, load_prices
from core.monitoring import run_daily_cycle
from core.registry import list_models

log = logging.getLogger("scheduler")
EXIT_OK, EXIT_FAILED, EXIT_LOCKED, EXIT_USAGE = 0, 1, 2, 3


class SchedulerLocked(RuntimeError):
    """Another scheduler holds the lock on this database."""


def lock_path() -> Path:
    db_path = get_settings().db_path
    return db_path.with_name(db_path.name + ".scheduler.lock")


@contextlib.contextmanager
def scheduler_lock(path: Path | None = None) -> Iterator[Path]:
    """Hold an exclusive, non-blocking flock on `path` for the scheduler's lifetime."""
    path = path or lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise SchedulerLocked(f"Another scheduler is running on this database (lock {path}, pid {holder}).") from exc
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield path
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM / SIGINT set `stop`; the cycle checks it between steps and the loop exits."""
    def handler(signum, _frame):
        log.info("received %s: stopping after the current step", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def trading_days(start, end) -> list[pd.Timestamp]:
    """Trading days in [start, end] of any ticker with a deployed model (tickers' calendars differ)."""
    days: set[pd.Timestamp] = set()
    for symbol in sorted({m["symbol"] for m in list_models(status="deployed")}):
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
    summary = run_daily_cycle(as_of, should_stop=stop.is_set, refresh_prices=refresh_prices)
    print(f"{summary['as_of']}: {summary['ok']} ok, {summary['failed']} failed in {summary['seconds']:.1f} s"
          + (" (stopped)" if summary["stopped"] else ""), flush=True)
    for entry in summary["models"]:
        if entry["status"] == "failed":
            print(f"  {entry['model_id']}: " + "; ".join(f"{k}: {v}" for k, v in entry["errors"].items()), flush=True)
    return EXIT_FAILED if summary["failed"] else EXIT_OK


def replay(start, end, stop: threading.Event) -> int:
    days = trading_days(start, end)
    if not days:
        print(f"No trading days between {start} and {end} for the deployed tickers.", file=sys.stderr)
        return EXIT_USAGE
    failed_days, started = 0, time.perf_counter()
    for i, day in enumerate(days, start=1):
        if stop.is_set():
            break
        summary = run_daily_cycle(day, should_stop=stop.is_set)
        failed_days += bool(summary["failed"])
        _progress_bar(i, len(days), f"{day:%Y-%m-%d} ok={summary['ok']} failed={summary['failed']}")
    sys.stderr.write("\n")
    print(f"Replayed {i} of {len(days)} trading days in {time.perf_counter() - started:.0f} s; "
          f"{failed_days} day(s) with a failed model." + (" Stopped early." if stop.is_set() else ""), flush=True)
    return EXIT_FAILED if failed_days else EXIT_OK


def loop(stop: threading.Event) -> int:
    settings = get_settings()

    def job() -> None:
        run_once(date.today(), stop, refresh_prices=not settings.offline)  # the scheduler reads the clock, core does not

    schedule.every().day.at(settings.drift_check_time).do(job)
    log.info("scheduler started: daily cycle at %s (next run %s)", settings.drift_check_time, schedule.next_run())
    while not stop.is_set():
        schedule.run_pending()
        stop.wait(timeout=min(30.0, max(1.0, schedule.idle_seconds() or 1.0)))
    schedule.clear()
    log.info("scheduler stopped")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one daily cycle and exit (for cron)")
    mode.add_argument("--replay", nargs=2, metavar=("START", "END"), help="run the cycle for each trading day in the range")
    parser.add_argument("--as-of", help="the day of the --once cycle (default: today)")
    parser.add_argument("--verbose", action="store_true", help="log one line per model per step during --replay too")
    args = parser.parse_args(argv)
    if args.as_of and not args.once:
        parser.error("--as-of goes with --once")
    quiet = args.replay and not args.verbose
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    install_stop_handlers(stop)
    try:
        with scheduler_lock():
            if args.once:
                return run_once(pd.Timestamp(args.as_of or date.today()), stop)
            if args.replay:
                start, end = (pd.Timestamp(v) for v in args.replay)
                if start > end:
                    parser.error(f"START {args.replay[0]} is after END {args.replay[1]}")
                return replay(start, end, stop)
            return loop(stop)
    except SchedulerLocked as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_LOCKED
    except ValueError as exc:  # a bad date, unknown ticker...: a clear message, not a trace
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
