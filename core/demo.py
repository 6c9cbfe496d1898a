"""The demo registry: real models on the bundled data and a replayed year of live-like predictions.

For every bundled ticker with enough history: train `rf` and `xgb` on the history up to a cutoff
about one year before the last bundled day, deploy the one with the better validation skill, then
replay the year after the cutoff day by day through the real serving path (`predict`) and
`backfill_actuals`, so the prediction log holds a year of history the other pages build on.

The last `LOOP_DAYS` trading days of `LOOP_SYMBOL` (^IXIC: September to December 2018, the autumn sell-off)
run through the real daily cycle with automatic retraining on and a simulated reviewer approving the
approval queue each day (`scheduled_tasks.py --replay --approve`), so the shipped database holds the
loop end to end with its honest outcome: drift, retrain, gate, shadow A/B test, decision, and what the
decision was worth on the days after it (Home, Model Management's timeline). The app's own default
stays MLSA_ENABLE_AUTO_RETRAIN=false; only this replay turns it on.

`DIRECTION_SYMBOL` (IBM) also gets a direction model (logistic regression, calibrated P(up)) trained at the
same cutoff and deployed beside its price model, so the replay serves and scores P(up) every day: Home,
Forecast and Monitoring show a direction model in production from the first start.

Run `python -m core.demo` (the Makefile does it on first start); `--force` rebuilds from scratch.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import pandas as pd

from core.ab_replay import simulate
from core.abtest import create_experiment, stop
from core.cluster import executor, task_settings
from core.config import get_settings
from core.market import MarketDataError, bundled_frame, load_prices
from core.cycle import backfill_history, run_daily_cycle
from core.direction import train_direction
from core.lifecycle import approve_all, certify_with_card, register_with_artifacts
from core.loop_view import decisions_worth, worth_in_words
from core.predict import backfill_actuals, predict
from core.registry import deploy, deployed_model, list_models
from core.store import close_all, get_db
from core.training import TrainedModel, train_model

log = logging.getLogger(__name__)

REPLAY_DAYS = 252  # one trading year
DIRECTION_SYMBOL = "IBM"  # the ticker whose demo also serves a direction model (logistic regression: seconds)
Report = Callable[[str], None]
Train = Callable[..., TrainedModel]


def demo_exists() -> bool:
    return bool(list_models())


def demo_cutoff(symbol: str) -> pd.Timestamp:
    """The trading day about one year before the last bundled day of `symbol`."""
    days = load_prices(symbol).index
    return days[max(0, len(days) - 1 - REPLAY_DAYS)]


def history_needed() -> int:
    """Trading days a ticker needs for the demo: a training window, then a year to replay."""
    return get_settings().min_history_days + 50 + REPLAY_DAYS


def train_and_deploy(symbol: str, report: Report, train: Train = train_model) -> str | None:
    """Train rf and xgb at the cutoff and deploy the better; None when the ticker is too short.
    `train(symbol, model_type, train_end=cutoff)` may read a result a cluster computed."""
    needed = history_needed()
    days = len(load_prices(symbol))
    if days < needed:
        report(f"  {symbol}: skipped: {days} trading days of history, at least {needed} needed to train "
               f"on one part and replay a year")
        return None
    cutoff = demo_cutoff(symbol)
    registered = []
    for model_type in ("rf", "xgb"):
        try:
            trained = train(symbol, model_type, train_end=cutoff)
        except MarketDataError as exc:
            report(f"  {symbol}: skipped ({exc})")
            return None
        model_id = register_with_artifacts(trained, reason="demo: initial training", actor="demo")
        registered.append((trained.metrics["skill"], model_id))
        report(f"  {symbol}: {model_id} MAE ${trained.metrics['mae']:.3f} vs naive "
               f"${trained.metrics['naive']['mae']:.3f} (skill {trained.metrics['skill']:+.3f})")
    best = max(registered)[1]
    certification = certify_with_card(best)
    failed = ", ".join(c.label for c in certification.checks if not c.passed)
    report(f"  {symbol}: {best} " + ("certified" if certification.certified else f"not certified (failed: {failed})"))
    reason = "demo: better validation skill of rf and xgb"
    if certification.certified:
        deploy(best, actor="demo", reason=reason)
    else:  # daily returns are nearly unpredictable: most honest models fail; the demo still needs a live model
        deploy(best, actor="demo", override=True,
               reason=f"{reason}; not certified (failed: {failed}), override so the demo has a live model to monitor")
    if symbol == DIRECTION_SYMBOL:
        deploy_direction(symbol, cutoff, report)
    return best


def deploy_direction(symbol: str, cutoff: pd.Timestamp, report: Report) -> str:
    """Train, certify and deploy a direction model (logistic regression) of `symbol` at the demo's cutoff."""
    trained = train_direction(symbol, "logit", train_end=cutoff)
    model_id = register_with_artifacts(trained, reason="demo: direction model", actor="demo")
    certification = certify_with_card(model_id)
    failed = ", ".join(c.label for c in certification.checks if not c.passed)
    best = trained.metrics["baselines"][trained.metrics["best_baseline"]]["accuracy"]
    report(f"  {symbol}: {model_id} accuracy {trained.metrics['accuracy']:.1%} vs {best:.1%} for the better baseline "
           f"(Brier skill {trained.metrics['skill']:+.4f}), " + ("certified" if certification.certified
                                                                 else f"not certified (failed: {failed})"))
    reason = "demo: a direction model beside the price model"
    deploy(model_id, actor="demo", override=not certification.certified,
           reason=reason if certification.certified else f"{reason}; not certified (failed: {failed}), override so "
                                                          "the demo serves P(up)")
    return model_id


def replay(symbol: str, start: pd.Timestamp, end: pd.Timestamp | None = None) -> int:
    """Predict and backfill each trading day in (start, end] as the live system would have."""
    days = load_prices(symbol, start=start, end=end).index
    direction = deployed_model(symbol, kind="direction") is not None  # also served, once per day (`DIRECTION_SYMBOL`)
    count = 0
    for day in days:
        predict(symbol, day)
        if direction:
            predict(symbol, day, kind="direction")
        backfill_actuals(day, symbol=symbol)
        count += 1
    return count


AB_DEMO_DAYS = (50, 30)  # trading days of the finished (shadow) and the running (50/50) demo A/B test
CYCLE_DAYS = 12  # the last replayed trading days run through the real daily cycle (scheduler runs, alerts)
LOOP_SYMBOL = "^IXIC"  # its last LOOP_DAYS run through the whole loop (automatic retraining on)
# ~4 months: drift has to be confirmed on 3 checks, a challenger's shadow test lasts up to 30 days and its
# decision needs days after it to be judged; ^IXIC's autumn-2018 sell-off drifts, retrains and tests within them
LOOP_DAYS = 85
LOOP_REVIEWER = "demo replay (simulated reviewer)"


def run_loop_window(symbol: str, days: list[pd.Timestamp], report: Report) -> None:
    """The real daily cycle for `symbol` on each of `days` with automatic retraining on, and the approval
    queue approved each day by a simulated reviewer (critical drift still queues first); then each loop
    it started, how it ended and what its decision was worth afterwards."""
    previous = os.environ.get("MLSA_ENABLE_AUTO_RETRAIN")
    os.environ["MLSA_ENABLE_AUTO_RETRAIN"] = "1"
    try:
        for day in days:
            run_daily_cycle(day, symbols=[symbol], actor="scheduler (demo replay, automatic retraining on)")
            approve_all(day, actor=LOOP_REVIEWER)
    finally:
        if previous is None:
            os.environ.pop("MLSA_ENABLE_AUTO_RETRAIN")
        else:
            os.environ["MLSA_ENABLE_AUTO_RETRAIN"] = previous
    worth = decisions_worth(days[0], days[-1])
    report(f"  loop window {days[0]:%Y-%m-%d} to {days[-1]:%Y-%m-%d} for {symbol} (daily cycle, automatic retraining "
           f"on): {len(worth)} retrain(s)" + (", " + ", ".join(f"{k} {v}" for k, v in worth["status"].value_counts().items())
                                              if len(worth) else ""))
    for row in worth.to_dict("records") if len(worth) else []:
        if row["status"] != "rejected":
            report(f"    job {row['job']} ({row['retrained on']}): {row['status']}: {row['decision']}")
            if words := worth_in_words(row):
                report(f"      {words}")


def ab_demo_symbol(deployed: dict[str, str]) -> str | None:
    """The ticker whose replay goes through the demo A/B tests: AAPL when present."""
    return "AAPL" if "AAPL" in deployed else next(iter(deployed), None)


def replay_with_experiments(symbol: str, start: pd.Timestamp, end: pd.Timestamp | None = None,
                            running_until: pd.Timestamp | None = None) -> int:
    """`replay` up to `end`, but the last days are served through two A/B tests of the deployed model vs the
    other model type: a finished shadow test (stopped with its winner recorded, not deployed, so the demo's
    deployments stay as trained) then a running 50/50 test planned to end on `running_until` (the last data
    day, so it can finish on the bundled data); the daily cycle serves its remaining days."""
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
    last = pd.Timestamp(running_until if running_until is not None else days[-1])
    # its ~50 days to the data's end (30 replayed, then the cycle's) leave each arm ~24 scored predictions:
    # a minimum of 20 lets the test reach its decision on the bundled data (the default 30 never would)
    running = create_experiment(f"{symbol}: champion vs challenger (50/50)", symbol, arms, start_date=second,
                                duration_days=(last - second).days + 1, min_samples=20, actor="demo")
    return count + simulate(running, second, days[-1])


def backfill_monitoring(symbol: str, start: pd.Timestamp, end: pd.Timestamp | None, report: Report) -> None:
    """daily_metrics and weekly drift checks over the replayed days (what the Monitoring page reads)."""
    backfill_history(start, end, symbols=[symbol], report=report)


def replay_calendars(deployed: dict[str, str], replay_days: int | None) -> dict[tuple, list[str]]:
    """Tickers grouped by their replay calendar (the stocks end in 2013, the indices in 2018): each group's
    last days run through the daily cycle together, as one scheduler would have run them."""
    groups: dict[tuple, list[str]] = {}
    for symbol in deployed:
        days = load_prices(symbol, start=demo_cutoff(symbol)).index
        days = days[: replay_days + 1] if replay_days is not None else days
        groups.setdefault(tuple(days), []).append(symbol)
    return groups


def run_cycles(days: list[pd.Timestamp], symbols: list[str]) -> list[str]:
    """The real daily cycle (backfill, metrics, drift, alerts, retrain decision, forecast) for each day."""
    failed = 0
    for day in days:
        summary = run_daily_cycle(day, symbols=symbols, actor="scheduler (demo replay)")
        failed += summary["failed"]
    return [f"  daily cycle over {len(days)} trading days ({days[0]:%Y-%m-%d} to {days[-1]:%Y-%m-%d}) for "
            f"{', '.join(symbols)}: {failed} failed model-days"]


# --- work units run in worker processes (each opens its own connection; SQLite serialises the writes) ---

def _quiet_worker(threads: int) -> None:
    """Worker processes log like the parent (warnings only, not the many alerts a replay raises) and train
    on their share of the cores: oversubscribed OpenMP / joblib threads spin and made the build 5x slower."""
    os.environ["MLSA_TRAIN_THREADS"] = str(threads)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("core.alerts").setLevel(logging.ERROR)


def _collect(work: Callable[[Report], object]) -> tuple[object, list[str]]:
    """Run one unit and return (result, report lines). A failure comes back as a line, not as an exception:
    some exceptions (e.g. sqlite3's with extra arguments) cannot be unpickled in the parent, which would
    break the whole pool instead of naming the one ticker that failed."""
    lines: list[str] = []
    try:
        result = work(lines.append)
    except Exception as exc:
        log.exception("demo unit failed")
        lines.append(f"  FAILED: {type(exc).__name__}: {exc}")
        result = None
    finally:
        close_all()
    return result, lines


def _relay(lines: list[str], report: Report) -> int:
    """Report a unit's lines in order; the number of failures among them."""
    for line in lines:
        report(line)
    return sum(line.startswith("  FAILED") for line in lines)


def _train_unit(symbol: str) -> tuple[object, list[str]]:
    return _collect(lambda report: train_and_deploy(symbol, report))


def _replay_unit(symbol: str, start: pd.Timestamp, end: pd.Timestamp, with_experiments: bool,
                 running_until: pd.Timestamp, loop_days: list[pd.Timestamp] | None = None) -> tuple[object, list[str]]:
    def work(report: Report) -> None:
        if with_experiments:
            n = replay_with_experiments(symbol, start, end, running_until=running_until)
        else:
            n = replay(symbol, start, end)
        report(f"  replayed {n} trading days of {symbol} after {start:%Y-%m-%d}")
        backfill_monitoring(symbol, start, end, report)
        if loop_days:
            run_loop_window(symbol, loop_days, report)
    return _collect(work)


def _train_units_on_cluster(symbols: list[str]) -> list[tuple[object, list[str]]]:
    """`_train_unit` for every ticker with the training on the Dask cluster (MLSA_DASK_SCHEDULER): every fit is
    submitted at once with plain inputs (prices, settings without secrets); this process registers, certifies
    (its refits on the cluster too) and deploys each ticker as its two models arrive: only it writes."""
    settings = task_settings()
    with executor() as tasks:
        handles = {}
        for symbol in symbols:
            try:
                if len(load_prices(symbol)) < history_needed():  # train_and_deploy says why it is skipped
                    continue
                cutoff = demo_cutoff(symbol)
                prices = load_prices(symbol, end=cutoff)  # the read train_model would make
            except MarketDataError:  # train_and_deploy reports it
                continue
            for model_type in ("rf", "xgb"):
                handles[symbol, model_type] = tasks.submit(f"train {model_type} {symbol}", train_model, symbol,
                                                           model_type, train_end=cutoff, prices=prices, settings=settings)

        def train(symbol: str, model_type: str, train_end) -> TrainedModel:
            return handles[symbol, model_type].result()

        return [_collect(lambda report, symbol=symbol: train_and_deploy(symbol, report, train)) for symbol in symbols]


def _cycle_unit(days: list[pd.Timestamp], symbols: list[str]) -> tuple[object, list[str]]:
    def work(report: Report) -> None:
        for line in run_cycles(days, symbols):
            report(line)
    return _collect(work)


def build_demo(
    report: Report = print, force: bool = False, symbols: list[str] | None = None, replay_days: int | None = None,
    workers: int = 2,
) -> None:
    """Build the demo registry (idempotent). Tests pass fewer `symbols` and a shorter `replay_days`.

    Per ticker: train, certify, deploy, then replay the year after the cutoff through the serving path;
    the last `CYCLE_DAYS` of each calendar run through the daily cycle instead, so Home and Monitoring
    show scheduler runs, error rates and alerts from the first start. Tickers are independent, so the
    work runs in `workers` processes (one per core on the 2-core reference machine); with
    MLSA_DASK_SCHEDULER the training runs on that cluster instead and this process registers the models.
    """
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
    close_all()  # workers open their own connections
    started = time.perf_counter()
    failed = 0
    symbols = symbols or sorted(bundled_frame()["symbol"].unique())
    report(f"Building the demo registry for {len(symbols)} tickers in {settings.db_path} with {workers} workers ...")
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_quiet_worker, initargs=(max(1, settings.train_threads // workers),)) as pool:
        deployed: dict[str, str] = {}
        units = _train_units_on_cluster(symbols) if settings.dask_scheduler else pool.map(_train_unit, symbols)
        for symbol, (best, lines) in zip(symbols, units):
            report(f"trained {symbol}")
            failed += _relay(lines, report)
            if best:
                deployed[symbol] = str(best)
        calendars = replay_calendars(deployed, replay_days)
        replays, cycles = [], []
        for calendar, group in calendars.items():
            days = list(calendar)
            cycle_days = days[-CYCLE_DAYS:] if len(days) > 2 * CYCLE_DAYS else []
            replay_end = cycle_days[0] - pd.Timedelta(days=1) if cycle_days else days[-1]
            loop_days = days[-LOOP_DAYS:] if LOOP_SYMBOL in group and len(days) > 2 * LOOP_DAYS else []
            if loop_days:  # first: the longest unit, it runs while the others replay
                replays.insert(0, (LOOP_SYMBOL, days[0], loop_days[0] - pd.Timedelta(days=1), False, days[-1], loop_days))
                group = [symbol for symbol in group if symbol != LOOP_SYMBOL]
            replays += [(symbol, days[0], replay_end, symbol == ab_demo_symbol(deployed), days[-1]) for symbol in group]
            if cycle_days and group:
                cycles.append((cycle_days, group))
        replays = [pool.submit(_replay_unit, *unit) for unit in replays]
        for future in replays:
            failed += _relay(future.result()[1], report)
        for days, group in cycles:  # one scheduler: the calendars' cycles run one after the other
            failed += _relay(pool.submit(_cycle_unit, days, group).result()[1], report)
    report(f"Demo registry built in {time.perf_counter() - started:.0f} s"
           + (f"; {failed} step(s) FAILED, see above (the rest of the demo is usable)." if failed else "."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="delete the database and models, then rebuild")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("core.alerts").setLevel(logging.ERROR)  # the replay raises many alerts: they are in the app
    build_demo(report=lambda line: print(line, flush=True), force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
