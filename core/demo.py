"""The demo registry: real models on the bundled data and a replayed year of live-like predictions.

For every bundled ticker with enough history: train `rf` and `xgb` on the history up to a cutoff
about one year before the last bundled day, deploy the one with the better validation skill, then
replay the year after the cutoff day by day through the real serving path (`predict`) and
`backfill_actuals`, so the prediction log holds a year of history the other pages build on.

Run `python -m core.demo` (the Makefile does it on first start); `--force` rebuilds from scratch.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from collections.abc import Callable

import pandas as pd

from core.abtest import create_experiment, simulate, stop
from core.certification import certify
from core.config import get_settings
from core.market import MarketDataError, bundled_frame, load_prices
from core.predict import backfill_actuals, predict
from core.registry import deploy, deployed_model, list_models, register
from core.store import close_all, get_db
from core.training import train_model

log = logging.getLogger(__name__)

REPLAY_DAYS = 252  # one trading year
Report = Callable[[str], None]


def demo_exists() -> bool:
    return bool(list_models())


def demo_cutoff(symbol: str) -> pd.Timestamp:
    """The trading day about one year before the last bundled day of `symbol`."""
    days = load_prices(symbol).index
    return days[max(0, len(days) - 1 - REPLAY_DAYS)]


def train_and_deploy(symbol: str, report: Report) -> str | None:
    """Train rf and xgb at the cutoff and deploy the better; None when the ticker is too short."""
    needed = get_settings().min_history_days + 50 + REPLAY_DAYS
    days = len(load_prices(symbol))
    if days < needed:
        report(f"  {symbol}: skipped: {days} trading days of history, at least {needed} needed to train "
               f"on one part and replay a year")
        return None
    cutoff = demo_cutoff(symbol)
    registered = []
    for model_type in ("rf", "xgb"):
        try:
            trained = train_model(symbol, model_type, train_end=cutoff)
        except MarketDataError as exc:
            report(f"  {symbol}: skipped ({exc})")
            return None
        model_id = register(trained, reason="demo: initial training", actor="demo")
        registered.append((trained.metrics["skill"], model_id))
        report(f"  {symbol}: {model_id} MAE ${trained.metrics['mae']:.3f} vs naive "
               f"${trained.metrics['naive']['mae']:.3f} (skill {trained.metrics['skill']:+.3f})")
    best = max(registered)[1]
    certification = certify(best)
    failed = ", ".join(c.label for c in certification.checks if not c.passed)
    report(f"  {symbol}: {best} " + ("certified" if certification.certified else f"not certified (failed: {failed})"))
    reason = "demo: better validation skill of rf and xgb"
    if certification.certified:
        deploy(best, actor="demo", reason=reason)
    else:  # daily returns are nearly unpredictable: most honest models fail; the demo still needs a live model
        deploy(best, actor="demo", override=True,
               reason=f"{reason}; not certified (failed: {failed}), override so the demo has a live model to monitor")
    return best


def replay(symbol: str, start: pd.Timestamp, end: pd.Timestamp | None = None) -> int:
    """Predict and backfill each trading day in (start, end] as the live system would have."""
    days = load_prices(symbol, start=start, end=end).index
    count = 0
    for day in days:
        predict(symbol, day)
        backfill_actuals(day, symbol=symbol)
        count += 1
    return count


AB_DEMO_DAYS = (50, 30)  # trading days of the finished (shadow) and the running (50/50) demo A/B test


def ab_demo_symbol(deployed: dict[str, str]) -> str | None:
    """The ticker whose replay goes through the demo A/B tests: AAPL when present."""
    return "AAPL" if "AAPL" in deployed else next(iter(deployed), None)


def replay_with_experiments(symbol: str, start: pd.Timestamp, end: pd.Timestamp | None = None) -> int:
    """`replay`, but the last days are served through two A/B tests of the deployed model vs the other
    model type: a finished shadow test (stopped with its winner recorded, not deployed, so the demo's
    deployments stay as trained) then a running 50/50 test. Every day still gets one served prediction."""
    days = load_prices(symbol, start=start, end=end).index
    finished_days, running_days = AB_DEMO_DAYS
    champion = deployed_model(symbol)["model_id"]
    challengers = [m["model_id"] for m in list_models(symbol) if m["model_type"] in ("rf", "xgb") and m["model_id"] != champion]
    if len(days) <= finished_days + running_days or not challengers:
        return replay(symbol, start, end)
    first, second = days[-(finished_days + running_days)], days[-running_days]
    count = replay(symbol, start, days[-(finished_days + running_days) - 1])
    arms = [(champion, 0.5), (challengers[0], 0.5)]
    finished = create_experiment(f"{symbol}: champion vs challenger (shadow)", symbol, arms, start_date=first,
                                 duration_days=(days[-running_days - 1] - first).days + 1, min_samples=20,
                                 shadow=True, actor="demo")
    count += simulate(finished, first, days[-running_days - 1])
    stop(finished, deploy_winner=False, actor="demo")
    running = create_experiment(f"{symbol}: champion vs challenger (50/50)", symbol, arms, start_date=second,
                                duration_days=90, actor="demo")
    return count + simulate(running, second, days[-1])


def backfill_monitoring(symbol: str, start: pd.Timestamp, end: pd.Timestamp | None, report: Report) -> None:
    """daily_metrics and weekly drift checks over the replayed days (what the Monitoring page reads)."""
    from core.monitoring import backfill_history

    backfill_history(start, end, symbols=[symbol], report=report)


def build_demo(
    report: Report = print, force: bool = False, symbols: list[str] | None = None, replay_days: int | None = None
) -> None:
    """Build the demo registry (idempotent). Tests pass fewer `symbols` and a shorter `replay_days`."""
    settings = get_settings()
    if force:
        close_all()
        for suffix in ("", "-wal", "-shm"):
            settings.db_path.with_name(settings.db_path.name + suffix).unlink(missing_ok=True)
        if settings.models_dir.exists():
            for child in settings.models_dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
    get_db()
    if demo_exists():
        report(f"Demo registry already present in {settings.db_path}; nothing to do (use --force to rebuild).")
        return
    started = time.perf_counter()
    symbols = symbols or sorted(bundled_frame()["symbol"].unique())
    report(f"Building the demo registry for {len(symbols)} tickers in {settings.db_path} ...")
    deployed: dict[str, str] = {}
    for i, symbol in enumerate(symbols, start=1):
        report(f"[{i}/{len(symbols)}] training {symbol}")
        best = train_and_deploy(symbol, report)
        if best:
            deployed[symbol] = best
    for i, symbol in enumerate(deployed, start=1):
        cutoff = demo_cutoff(symbol)
        end = None
        if replay_days is not None:
            days = load_prices(symbol, start=cutoff).index
            end = days[min(replay_days, len(days) - 1)]
        replayer = replay_with_experiments if symbol == ab_demo_symbol(deployed) else replay
        n = replayer(symbol, cutoff, end)
        report(f"[{i}/{len(deployed)}] replayed {n} trading days of {symbol} after {cutoff:%Y-%m-%d}")
        backfill_monitoring(symbol, cutoff, end, report)
    report(f"Demo registry built in {time.perf_counter() - started:.0f} s.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="delete the database and models, then rebuild")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    build_demo(report=lambda line: print(line, flush=True), force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
