"""A/B tests between model versions: owns the `experiments` and `experiment_arms` tables.

An experiment splits one ticker's serving traffic between two or more registered models ("arms";
arm A is the control, usually the champion). `active_route` is called by the serving path on every
request; `analyze` compares the arms' prediction errors; `stop` ends a test and deploys the winner
through the registry; `simulate` replays historical days through the real serving path.

Decision rule: the page is looked at every day, so a fixed-horizon t-test re-run daily would find
false winners far more often than its nominal 5 %. The winner is therefore decided by an always-valid
p-value from a mixture sequential probability ratio test (mSPRT; Johari, Pekelis & Walsh, "Always
Valid Inference", 2017; Robbins 1970), which may be checked after every observation. Welch's /
the paired t-test are reported beside it as the fixed-horizon reference.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlite_utils
from scipy import stats

from core.config import get_settings
from core.formatting import NOT_ENOUGH, finite, interval, number, p_value
from core.market import load_prices, next_trading_day
from core.predict import Route, backfill_actuals, in_training_window, predict
from core.registry import RegistryError, deploy, deployed_model, get_model, load_model
from core.store import audit, get_db, transaction, utc_now, where_clause

log = logging.getLogger(__name__)

METRICS = {"mae": "mean absolute error ($)", "mape": "mean absolute percentage error (%)"}
SRM_ALPHA = 0.001  # sample-ratio-mismatch flag: p below this means the split is broken, not unlucky
MIXTURE_EFFECT_SD = 0.5  # mSPRT prior: standardised effect ~ N(0, 0.5^2), a "medium" effect (Cohen 1988)
DECISION_RULE = "always-valid mSPRT p-value (peeking-safe, checked after every daily look)"
MAX_ARMS = 6
MAX_NAME_LENGTH = 120
DURATION_DAYS = (1, 365)
MIN_SAMPLES = (2, 100_000)
CONFIDENCE_LEVEL = (0.5, 0.999)  # (exclusive, inclusive]


class ExperimentError(ValueError):
    """An experiment that cannot be created, routed, analysed or stopped as asked."""


# --- routing (pure) -----------------------------------------------------------------------------------

def route_key(experiment_id: int, request_key: str, shares: Sequence[float]) -> int:
    """The arm index for a request: sha256 of (experiment id, key) mapped into [0, 1) against the
    cumulative shares. Deterministic across processes and restarts (Python's `hash()` is salted).

    >>> route_key(1, "AAPL:2012-05-01", [0.5, 0.5]) == route_key(1, "AAPL:2012-05-01", [0.5, 0.5])
    True
    """
    digest = hashlib.sha256(f"{experiment_id}:{request_key}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64
    edges = list(itertools.accumulate(shares))
    return min(bisect.bisect_right(edges, position), len(shares) - 1)


def route(experiment: Mapping, request_key: str) -> Route:
    """The `Route` of one request in `experiment` (a dict from `get_experiment`, with its arms)."""
    arms = experiment["arms"]
    chosen = arms[route_key(experiment["id"], request_key, [a["traffic_share"] for a in arms])]
    shadows = tuple((a["arm"], a["model_id"]) for a in arms if a["arm"] != chosen["arm"]) if experiment["shadow"] else ()
    return Route(model_id=chosen["model_id"], experiment_id=experiment["id"], arm=chosen["arm"], shadows=shadows)


def active_route(db: sqlite_utils.Database, symbol: str, request_key: str, day=None) -> Route | None:
    """The route for a request on `symbol` when a running experiment covers `day`, else None (serving hook).

    A request dated before the test's start or after its planned end is served by the deployed model
    (replays of past days must not meet a challenger that was not live then), and so is a day inside
    any arm's training window: arms are scored only on days none of them was trained on. One small
    query per request: experiments is a tiny table and experiment_arms is keyed by experiment id.
    """
    on_day = _day(day) if day is not None else None
    rows = db.execute(
        "SELECT e.id, e.shadow, a.arm, a.model_id, a.traffic_share, m.train_end FROM experiments e "
        "JOIN experiment_arms a ON a.experiment_id = e.id JOIN models m ON m.model_id = a.model_id "
        "WHERE e.symbol = ? AND e.status = 'running' AND (? IS NULL OR ? BETWEEN e.start_date AND e.end_date) "
        "ORDER BY a.arm",
        [symbol, on_day, on_day],
    ).fetchall()
    if not rows or (on_day is not None and in_training_window(max(r[5] for r in rows), on_day)):
        return None
    experiment = {"id": rows[0][0], "shadow": bool(rows[0][1]),
                  "arms": [{"arm": r[2], "model_id": r[3], "traffic_share": r[4]} for r in rows]}
    return route(experiment, request_key)


# --- experiments (storage) ----------------------------------------------------------------------------

def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


def create_experiment(
    name: str,
    symbol: str,
    arms: Sequence[tuple[str, float]],
    start_date,
    duration_days: int = 30,
    min_samples: int | None = None,
    confidence_level: float | None = None,
    metric: str = "mae",
    shadow: bool = False,
    actor: str = "user",
    db: sqlite_utils.Database | None = None,
) -> int:
    """Start an experiment on `symbol` with `arms` = [(model_id, share), ...]; returns its id.

    Arms are named A, B, C... in the order given; A is the control. The same model may appear in
    two arms (an A/A test checks the pipeline). Shares are fractions summing to 1. Every parameter is
    bounded (MAX_NAME_LENGTH, MAX_ARMS, DURATION_DAYS, MIN_SAMPLES, CONFIDENCE_LEVEL) and every arm's
    artifact must pass the registry's integrity check.
    """
    db = db or get_db()
    settings = get_settings()
    min_samples = _bounded_int("min_samples", settings.ab_min_samples if min_samples is None else min_samples, *MIN_SAMPLES)
    duration_days = _bounded_int("The duration (days)", duration_days, *DURATION_DAYS)
    confidence_level = _number("confidence_level", settings.ab_confidence_level if confidence_level is None else confidence_level)
    name, symbol = str(name or "").strip(), str(symbol or "").strip().upper()
    _validate_new(name, symbol, arms, confidence_level, metric, db)
    start = _start_day(start_date)
    check_start(symbol, start, db)
    with transaction(db):
        if list(db.query("SELECT id FROM experiments WHERE name = ?", [name])):
            raise ExperimentError(f"An experiment named {name!r} already exists: choose another name.")
        running = list(db.query("SELECT name FROM experiments WHERE symbol = ? AND status = 'running'", [symbol]))
        if running:
            raise ExperimentError(f"{symbol} already has a running experiment ({running[0]['name']}): stop it first.")
        table = db["experiments"]
        table.insert({
            "name": name, "symbol": symbol, "status": "running", "created_at": utc_now(),
            "start_date": _day(start), "end_date": _day(start + pd.Timedelta(days=duration_days - 1)),  # last day, inclusive
            "min_samples": min_samples, "confidence_level": confidence_level, "metric": metric,
            "shadow": int(bool(shadow)), "winner": None, "stopped_at": None,
        })
        experiment_id = table.last_pk
        db["experiment_arms"].insert_all(
            [{"experiment_id": experiment_id, "arm": string.ascii_uppercase[i], "model_id": str(model_id),
              "traffic_share": float(share)} for i, (model_id, share) in enumerate(arms)],
            pk=("experiment_id", "arm"),
        )
        audit(db, actor, "create_experiment", f"experiment:{experiment_id}", {
            "name": name, "symbol": symbol, "arms": [list(a) for a in arms], "shadow": bool(shadow),
            "min_samples": min_samples, "confidence_level": confidence_level, "metric": metric,
        })
    log.info("experiment %d (%s) started on %s with %d arms", experiment_id, name, symbol, len(arms))
    return experiment_id


def _number(label: str, value) -> float:
    """`value` as a finite float, else a clear ExperimentError (NaN and infinity are not parameters)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ExperimentError(f"{label} must be a number, got {value!r}.") from None
    if not np.isfinite(number):
        raise ExperimentError(f"{label} must be a finite number, got {value!r}.")
    return number


def _bounded_int(label: str, value, low: int, high: int) -> int:
    number = _number(label, value)
    if number != int(number) or not low <= number <= high:
        raise ExperimentError(f"{label} must be a whole number from {low} to {high:,}, got {value!r}.")
    return int(number)


def _start_day(value) -> pd.Timestamp:
    try:
        start = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ExperimentError(f"The start date {value!r} is not a date ({exc}).") from None
    if pd.isna(start):
        raise ExperimentError("Give the experiment a start date.")
    return start.normalize()


def check_start(symbol: str, start, db: sqlite_utils.Database) -> None:
    """Refuse a start date from which the test can never collect a scored prediction.

    A forecast made on day d is scored on the next close. A start after the data's last day never
    sees a close; a start on the last day sees one only if new prices arrive, which bundled
    (offline) data never does.
    """
    prices = load_prices(symbol, db=db)
    last, source = prices.index[-1], str(prices.attrs.get("source", ""))
    day = _start_day(start)
    if day > last or (day == last and "bundled" in source):
        raise ExperimentError(
            f"A test starting on {_day(day)} can never collect data: {symbol}'s prices end on {_day(last)}"
            + (" and bundled data does not grow" if "bundled" in source else "")
            + ". Start it on a day with a following close (before the last data day), e.g. the arms' last training day.")


def default_start(symbol: str, model_ids: Sequence[str], db: sqlite_utils.Database | None = None) -> pd.Timestamp:
    """A start that can collect data: the first day every arm can be scored on (the latest training
    end of `model_ids`), kept before the ticker's last data day."""
    db = db or get_db()
    days = load_prices(symbol, db=db).index
    first = max((pd.Timestamp(get_model(m, db=db)["train_end"]) for m in model_ids), default=days[0])
    return min(first, days[-2] if len(days) > 1 else days[-1])


def is_aa_test(model_ids: Sequence[str]) -> bool:
    """True when some model is in two arms: an A/A test (checks the pipeline; no model can win)."""
    return len(set(model_ids)) < len(model_ids)


def in_sample_days(experiment: Mapping, observations: pd.DataFrame, db: sqlite_utils.Database) -> list[str]:
    """The analysed days on which some arm was still inside its training window (read from the
    registry, not from the analysis' own filter): a result built on them cannot deploy."""
    if observations.empty:
        return []
    latest_end = max(get_model(a["model_id"], db=db)["train_end"] for a in experiment["arms"])
    return sorted({str(d) for d in observations["as_of"] if in_training_window(latest_end, d)})


def _validate_new(name, symbol, arms, confidence_level, metric, db) -> None:
    """Refuse, with a sentence saying what to change, anything the statistics or the storage cannot take."""
    if not name:
        raise ExperimentError("Give the experiment a name.")
    if len(name) > MAX_NAME_LENGTH:
        raise ExperimentError(f"The name is {len(name)} characters long: keep it to {MAX_NAME_LENGTH}.")
    if not 2 <= len(arms) <= MAX_ARMS:
        raise ExperimentError(f"An experiment needs 2 to {MAX_ARMS} arms, got {len(arms)}.")
    shares = np.array([_number(f"The traffic share of arm {string.ascii_uppercase[i]}", share)
                       for i, (_, share) in enumerate(arms)])
    if (shares <= 0).any() or (shares > 1).any():
        raise ExperimentError("Every arm needs a traffic share above 0 and at most 1 (100 %).")
    if abs(shares.sum() - 1.0) > 1e-6:
        raise ExperimentError(f"Traffic shares must sum to 100 %, they sum to {shares.sum() * 100:.1f} %.")
    if metric not in METRICS:
        raise ExperimentError(f"Unknown metric {metric!r}: expected one of {', '.join(METRICS)}.")
    low, high = CONFIDENCE_LEVEL
    if not low < confidence_level <= high:
        raise ExperimentError(f"confidence_level must be above {low} and at most {high}, got {confidence_level}.")
    for letter, (model_id, _) in zip(string.ascii_uppercase, arms):
        try:
            model = get_model(str(model_id), db=db)
        except RegistryError as exc:
            raise ExperimentError(f"Arm {letter}: {exc}") from exc
        if model["symbol"] != symbol:
            raise ExperimentError(f"{model_id} forecasts {model['symbol']}, not {symbol}: all arms need the same ticker.")
    _verify_arms([(letter, str(model_id)) for letter, (model_id, _) in zip(string.ascii_uppercase, arms)], db)


def _verify_arms(arms: Sequence[tuple[str, str]], db: sqlite_utils.Database) -> None:
    """Load every arm's model through the registry (sha256 and feature signature checked): an arm that
    cannot serve would only ever fall back to the deployed model, so it is refused up front."""
    for letter, model_id in arms:
        try:
            load_model(model_id, db=db)
        except RegistryError as exc:  # ModelIntegrityError included
            raise ExperimentError(f"Arm {letter} ({model_id}) cannot be used: its artifact does not verify ({exc}).") from exc


def get_experiment(experiment_id: int, db: sqlite_utils.Database | None = None) -> dict:
    """The experiment row with its arms (list of dicts, ordered A, B, ...)."""
    db = db or get_db()
    rows = list(db.query("SELECT * FROM experiments WHERE id = ?", [int(experiment_id)]))
    if not rows:
        raise ExperimentError(f"No experiment with id {experiment_id}.")
    experiment = dict(rows[0])
    experiment["shadow"] = bool(experiment["shadow"])
    experiment["arms"] = list(db.query(
        "SELECT arm, model_id, traffic_share FROM experiment_arms WHERE experiment_id = ? ORDER BY arm", [experiment["id"]]
    ))
    return experiment


def list_experiments(symbol: str | None = None, status: str | None = None,
                     db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Experiments, running first then newest, with their arms and served counts, for overview tables."""
    db = db or get_db()
    where, params = where_clause(("e.symbol = ?", symbol), ("e.status = ?", status))
    return pd.read_sql_query(
        "SELECT e.id, e.name, e.symbol, e.status, e.start_date, e.end_date, e.min_samples, e.confidence_level, "
        "e.metric, e.shadow, e.winner, e.stopped_at, "
        "(SELECT GROUP_CONCAT(a.arm || '=' || a.model_id || ' (' || CAST(ROUND(a.traffic_share * 100) AS INT) || '%)', ', ') "
        " FROM experiment_arms a WHERE a.experiment_id = e.id) AS arms, "
        "(SELECT COUNT(*) FROM predictions p WHERE p.experiment_id = e.id AND p.served = 1) AS served "
        f"FROM experiments e {where} ORDER BY e.status = 'running' DESC, e.id DESC",
        db.conn, params=params,
    )


# --- predictions from outside the app -----------------------------------------------------------------

def record_prediction(
    experiment_id: int, model_id: str, predicted_close: float, as_of, last_close: float | None = None,
    target_date=None, request_key: str | None = None, actual_close: float | None = None,
    db: sqlite_utils.Database | None = None,
) -> int:
    """Log a prediction made outside the app for an arm of a running experiment; returns its id.

    The actual can come later through `record_actual`. The row is served (it answered a request), so
    the serving path's evidence rules hold: a day outside the test's dates or inside the model's
    training window is refused, and an arm has one prediction per day: recording the same one again
    (a retry) returns the logged id, a different one for a day already recorded is refused.
    """
    db = db or get_db()
    experiment = get_experiment(experiment_id, db=db)
    if experiment["status"] != "running":
        raise ExperimentError(f"Experiment {experiment['name']} is {experiment['status']}: it takes no new predictions.")
    arm = next((a["arm"] for a in experiment["arms"] if a["model_id"] == model_id), None)
    if arm is None:
        raise ExperimentError(f"{model_id} is not an arm of experiment {experiment['name']}.")
    if not np.isfinite(predicted_close) or predicted_close <= 0:
        raise ExperimentError(f"predicted_close must be a positive price, got {predicted_close}.")
    as_of_day = _day(as_of)
    if not experiment["start_date"] <= as_of_day <= experiment["end_date"]:
        raise ExperimentError(f"{as_of_day} is outside experiment {experiment['name']} "
                              f"({experiment['start_date']} to {experiment['end_date']}).")
    train_end = get_model(model_id, db=db)["train_end"]
    if in_training_window(train_end, as_of_day):
        raise ExperimentError(f"{as_of_day} is inside the training window of {model_id} (trained on closes up to "
                              f"{train_end}): an in-sample prediction is not evidence. The first allowed day is {train_end}.")
    row = {
        "model_id": model_id, "symbol": experiment["symbol"], "as_of": as_of_day,
        # the close a next-day forecast is judged on is the next trading day's, never as_of's own
        "target_date": _day(target_date) if target_date is not None else _day(next_trading_day(experiment["symbol"], as_of, db=db)),
        "predicted_close": float(predicted_close), "lower": None, "upper": None, "last_close": last_close,
        "latency_ms": None, "experiment_id": experiment["id"], "arm": arm,
        "request_key": request_key or f"external:{experiment['id']}:{as_of_day}:{arm}",
        "actual_close": actual_close, "served": 1, "created_at": utc_now(),
    }
    with transaction(db):
        cursor = db.execute(f"INSERT OR IGNORE INTO predictions ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                            list(row.values()))
        if cursor.rowcount == 1:
            return cursor.lastrowid
        logged_id, logged_close = db.execute(
            "SELECT id, predicted_close FROM predictions WHERE symbol = ? AND as_of = ? AND model_id = ? "
            "AND ifnull(experiment_id, -1) = ? AND ifnull(arm, '') = ? AND served = 1",
            [experiment["symbol"], as_of_day, model_id, experiment["id"], arm]).fetchone()
    if logged_close != row["predicted_close"]:
        raise ExperimentError(f"Arm {arm} of {experiment['name']} already has a prediction for {as_of_day} "
                              f"(id {logged_id}, ${logged_close:,.2f}): one prediction per arm and day.")
    return logged_id


def record_actual(prediction_id: int, actual_close: float, db: sqlite_utils.Database | None = None) -> None:
    """Attach the realised close to a prediction recorded with `record_prediction`."""
    db = db or get_db()
    if not np.isfinite(actual_close) or actual_close <= 0:
        raise ExperimentError(f"actual_close must be a positive price, got {actual_close}.")
    with transaction(db):
        cursor = db.execute("UPDATE predictions SET actual_close = ? WHERE id = ? AND experiment_id IS NOT NULL",
                            [float(actual_close), int(prediction_id)])
        if cursor.rowcount == 0:
            raise ExperimentError(f"No experiment prediction with id {prediction_id}.")


# --- statistics (pure, vectorised) --------------------------------------------------------------------

@dataclass(frozen=True)
class Looks:
    """Cumulative statistics at each look (last axis) of a comparison, any leading shape.

    `difference` is challenger minus control mean loss (negative: the challenger errs less),
    `variance` its estimated variance, `scale2` the per-observation variance that sets the mSPRT
    prior's width, `df` the t degrees of freedom.
    """

    n_control: np.ndarray
    n_challenger: np.ndarray
    difference: np.ndarray
    variance: np.ndarray
    scale2: np.ndarray
    df: np.ndarray


def _moments(n, total, total_sq):
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n
        var = (total_sq - n * mean**2) / (n - 1)
    return mean, np.maximum(var, 0.0)


def looks_two_sample(n_a, sum_a, sumsq_a, n_b, sum_b, sumsq_b) -> Looks:
    """Welch statistics from cumulative count, sum and sum of squares of each arm's losses."""
    n_a, n_b = np.asarray(n_a, dtype=float), np.asarray(n_b, dtype=float)
    mean_a, var_a = _moments(n_a, np.asarray(sum_a, dtype=float), np.asarray(sumsq_a, dtype=float))
    mean_b, var_b = _moments(n_b, np.asarray(sum_b, dtype=float), np.asarray(sumsq_b, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        se_a, se_b = var_a / n_a, var_b / n_b
        variance = se_a + se_b
        df = variance**2 / (se_a**2 / (n_a - 1) + se_b**2 / (n_b - 1))  # Welch-Satterthwaite
    return Looks(n_a, n_b, mean_b - mean_a, variance, (var_a + var_b) / 2, df)


def looks_paired(n, sum_d, sumsq_d) -> Looks:
    """Paired statistics from cumulative count, sum and sum of squares of differences (challenger - control)."""
    n = np.asarray(n, dtype=float)
    mean, var = _moments(n, np.asarray(sum_d, dtype=float), np.asarray(sumsq_d, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        return Looks(n, n, mean, var / n, var, n - 1)


def always_valid_pvalues(looks: Looks, min_samples: int, effect_sd: float = MIXTURE_EFFECT_SD) -> np.ndarray:
    """mSPRT always-valid p-values along the last axis (running minimum over looks).

    With a normal mixture N(0, tau^2) over the true difference, tau^2 = effect_sd^2 * scale2, the
    likelihood ratio at a look with difference d and variance V is
    sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2))); by Ville's inequality its
    reciprocal's running minimum is a p-value valid however often it is checked. Looks before both
    arms have `min_samples` observations are skipped (the plug-in variance is unreliable there).

    Paired differences with mean -0.5 and sd 1 after 30 and 60 observations: the fixed t-test p is
    0.012 at the first look already; the always-valid p asks for more evidence before it gets small.

    >>> lk = looks_paired(np.array([30, 60]), np.array([-15.0, -30.0]), np.array([37.5, 75.0]))
    >>> np.round(always_valid_pvalues(lk, min_samples=30), 4).tolist()
    [0.119, 0.004]
    """
    tau2 = effect_sd**2 * looks.scale2
    eligible = (np.minimum(looks.n_control, looks.n_challenger) >= max(min_samples, 2)) & (looks.variance > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = looks.variance
        log_lr = 0.5 * np.log(v / (v + tau2)) + looks.difference**2 * tau2 / (2 * v * (v + tau2))
        p = np.minimum(1.0, np.exp(-log_lr))
    p = np.where(eligible & np.isfinite(p), p, 1.0)
    return np.minimum.accumulate(p, axis=-1)


def confidence_sequence(looks: Looks, alpha: float, min_samples: int, effect_sd: float = MIXTURE_EFFECT_SD):
    """(low, high) always-valid bounds on the difference, intersected over looks (the mSPRT's dual)."""
    tau2 = effect_sd**2 * looks.scale2
    v = looks.variance
    eligible = (np.minimum(looks.n_control, looks.n_challenger) >= max(min_samples, 2)) & (v > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.sqrt(v * (v + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((v + tau2) / v)))
    low = np.where(eligible, looks.difference - half, -np.inf)
    high = np.where(eligible, looks.difference + half, np.inf)
    return np.maximum.accumulate(low, axis=-1), np.minimum.accumulate(high, axis=-1)


def fixed_horizon_pvalues(looks: Looks) -> np.ndarray:
    """Two-sided t-test p-value at each look (Welch or paired): valid only if looked at once."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = looks.difference / np.sqrt(looks.variance)
        p = 2 * stats.t.sf(np.abs(t), looks.df)
    return np.where(np.isfinite(p), p, 1.0)


def cumulative_by_look(losses: np.ndarray, look: np.ndarray, n_looks: int):
    """(count, sum, sum of squares) of `losses` up to and including each look 0..n_looks-1."""
    losses = np.asarray(losses, dtype=float)
    look = np.asarray(look, dtype=int)
    return tuple(np.cumsum(np.bincount(look, weights=w, minlength=n_looks)[:n_looks])
                 for w in (np.ones_like(losses), losses, losses**2))


@dataclass(frozen=True)
class Comparison:
    """One challenger arm against the control arm A on the primary metric's per-prediction loss."""

    arm: str
    control: str
    test: str  # "welch" (independent arms) or "paired" (shadow mode, same requests)
    n: int
    n_control: int
    difference: float  # challenger mean loss - control mean loss
    ci_low: float  # fixed-horizon confidence interval of the difference
    ci_high: float
    p_fixed: float  # Welch's / paired t-test p-value
    p_sequential: float  # always-valid mSPRT p-value
    cs_low: float  # always-valid confidence sequence of the difference
    cs_high: float
    significant: bool  # by the rule in force, after min_samples


@dataclass(frozen=True)
class ArmComparison:
    arms: tuple[str, ...]
    n: dict[str, int]
    mean_loss: dict[str, float]
    comparisons: list[Comparison]
    alpha: float
    alpha_per_comparison: float  # Bonferroni over the challenger-vs-control comparisons
    rule: str
    enough_samples: bool
    srm_p: float | None
    srm_flag: bool
    winner: str | None
    significant: bool
    improvement_pct: float  # lower loss of the best arm vs the control (or vs the best challenger if A is best)
    track: pd.DataFrame = field(repr=False)  # per look: comparison, look, n, p_sequential, p_fixed


def compare_arms(
    errors_by_arm: Mapping[str, Sequence[float]],
    shares: Sequence[float],
    confidence_level: float,
    min_samples: int,
    paired: bool = False,
    served_counts: Mapping[str, int] | None = None,
    looks: Mapping[str, Sequence[int]] | None = None,
    rule: str = "sequential",
) -> ArmComparison:
    """Compare arms on arrays of per-prediction losses (e.g. absolute errors), in time order.

    The first arm is the control. `paired` means the arrays are aligned (same requests, shadow
    mode). `looks` gives each observation's look (day) number, non-decreasing; by default each
    position is a look. `served_counts` are the routed request counts for the sample-ratio check
    (default: the array lengths, unless paired). `rule` "sequential" (default, peeking-safe) or
    "fixed" (the t-test; valid only when looked at once, kept to show what peeking does).
    """
    if rule not in ("sequential", "fixed"):
        raise ExperimentError(f"rule must be 'sequential' or 'fixed', got {rule!r}.")
    arms = tuple(errors_by_arm)
    if len(arms) < 2 or len(shares) != len(arms):
        raise ExperimentError("compare_arms needs at least two arms and one share per arm.")
    losses = {arm: np.asarray(errors_by_arm[arm], dtype=float) for arm in arms}
    if any(not np.isfinite(v).all() for v in losses.values()):
        raise ExperimentError("Losses contain NaN or infinite values: drop predictions without actuals first.")
    if paired and len({len(v) for v in losses.values()}) != 1:
        raise ExperimentError("Paired comparison needs equally long arrays (the same requests in every arm).")
    look_of = {arm: np.asarray(looks[arm], dtype=int) if looks is not None else np.arange(len(losses[arm]))
               for arm in arms}
    alpha = 1 - confidence_level
    alpha_each = alpha / (len(arms) - 1)
    n = {arm: int(len(v)) for arm, v in losses.items()}
    mean_loss = {arm: float(v.mean()) if len(v) else float("nan") for arm, v in losses.items()}
    enough = min(n.values()) >= min_samples
    control = arms[0]
    comparisons, tracks = [], []
    for arm in arms[1:]:
        comparison, track = _compare_pair(losses[control], losses[arm], look_of[control], look_of[arm], control, arm,
                                          paired, alpha_each, min_samples, enough, rule)
        comparisons.append(comparison)
        tracks.append(track)
    counts = served_counts if served_counts is not None else (None if paired else n)
    srm_p = srm_pvalue([counts[a] for a in arms], shares) if counts is not None else None
    winner, improvement = _decide(comparisons, mean_loss, control)
    return ArmComparison(
        arms=arms, n=n, mean_loss=mean_loss, comparisons=comparisons, alpha=alpha, alpha_per_comparison=alpha_each,
        rule=rule, enough_samples=enough, srm_p=srm_p, srm_flag=srm_p is not None and srm_p < SRM_ALPHA,
        winner=winner, significant=winner is not None, improvement_pct=improvement,
        track=pd.concat(tracks, ignore_index=True) if tracks else pd.DataFrame(),
    )


def _compare_pair(loss_a, loss_b, look_a, look_b, control, arm, paired, alpha_each, min_samples, enough, rule):
    n_looks = int(max(look_a.max(initial=-1), look_b.max(initial=-1))) + 1
    if paired:
        looks = looks_paired(*cumulative_by_look(loss_b - loss_a, look_a, n_looks))
    else:
        looks = looks_two_sample(*cumulative_by_look(loss_a, look_a, n_looks), *cumulative_by_look(loss_b, look_b, n_looks))
    p_seq = always_valid_pvalues(looks, min_samples)
    p_fix = fixed_horizon_pvalues(looks)
    cs_low, cs_high = confidence_sequence(looks, alpha_each, min_samples)
    ci_low = ci_high = p_fixed = float("nan")
    if min(len(loss_a), len(loss_b)) >= 2:
        result = (stats.ttest_rel(loss_b, loss_a) if paired else stats.ttest_ind(loss_b, loss_a, equal_var=False))
        p_fixed = float(result.pvalue)
        ci = result.confidence_interval(1 - alpha_each)
        ci_low, ci_high = float(ci.low), float(ci.high)
    p_last = float(p_seq[-1]) if n_looks else 1.0
    decisive = p_last if rule == "sequential" else p_fixed
    comparison = Comparison(
        arm=arm, control=control, test="paired" if paired else "welch", n=len(loss_b), n_control=len(loss_a),
        difference=float(loss_b.mean() - loss_a.mean()) if len(loss_a) and len(loss_b) else float("nan"),
        ci_low=ci_low, ci_high=ci_high, p_fixed=p_fixed, p_sequential=p_last,
        cs_low=float(cs_low[-1]) if n_looks else float("-inf"), cs_high=float(cs_high[-1]) if n_looks else float("inf"),
        significant=bool(enough and np.isfinite(decisive) and decisive <= alpha_each),
    )
    track = pd.DataFrame({"comparison": f"{arm} vs {control}", "look": np.arange(n_looks),
                          "n_control": looks.n_control, "n": looks.n_challenger,
                          "p_sequential": p_seq, "p_fixed": p_fix})
    return comparison, track


def _decide(comparisons: list[Comparison], mean_loss: dict[str, float], control: str) -> tuple[str | None, float]:
    """Winner: the lowest-loss challenger significantly better than A; else A if it beats every challenger."""
    better = [c for c in comparisons if c.significant and c.difference < 0]
    if better:
        best = min(better, key=lambda c: mean_loss[c.arm])
        return best.arm, _pct(mean_loss[control], mean_loss[best.arm])
    challengers = [c.arm for c in comparisons]
    best_challenger = min(challengers, key=lambda a: mean_loss[a])
    if comparisons and all(c.significant and c.difference > 0 for c in comparisons):
        return control, _pct(mean_loss[best_challenger], mean_loss[control])
    if mean_loss[best_challenger] < mean_loss[control]:
        return None, _pct(mean_loss[control], mean_loss[best_challenger])
    return None, _pct(mean_loss[best_challenger], mean_loss[control])


def _pct(reference: float, better: float) -> float:
    return float((reference - better) / reference * 100) if reference and np.isfinite(reference) else float("nan")


def improvement_text(result: ArmComparison, metric: str = "mae") -> str:
    """Which arm beats which, in words: "arm B's MAE is 3.2% lower than arm A's" (NOT_ENOUGH without data).

    The arm with the lowest mean loss against the control, or, when the control is lowest, against
    the best challenger; significance is the recommendation's business, not this sentence's.
    """
    losses = {a: result.mean_loss.get(a, float("nan")) for a in result.arms}
    if not all(finite(v) for v in losses.values()):
        return NOT_ENOUGH
    control = result.arms[0]
    best = min(losses, key=losses.get)
    other = control if best != control else min(result.arms[1:], key=losses.get)
    if not losses[other] or losses[best] == losses[other]:
        return f"arms {best} and {other}: same {metric.upper()}"
    pct = (losses[other] - losses[best]) / losses[other] * 100
    return f"arm {best}'s {metric.upper()} is {pct:.1f}% lower than arm {other}'s"


def comparisons_frame(result: ArmComparison) -> pd.DataFrame:
    """The challenger-vs-control comparisons for reading: p-values in scientific notation when tiny,
    "not enough data" for bounds that are still infinite or values not defined yet."""
    return pd.DataFrame([{
        "comparison": f"{c.arm} vs {c.control}", "test": c.test, "n": f"{c.n} vs {c.n_control}",
        "difference": number(c.difference, "+.4f"), "always-valid p": p_value(c.p_sequential),
        "always-valid interval": interval(c.cs_low, c.cs_high, "+.4f"), "t-test p (look once)": p_value(c.p_fixed),
        "t-test interval": interval(c.ci_low, c.ci_high, "+.4f"), "significant": "yes" if c.significant else "no",
    } for c in result.comparisons])


def srm_pvalue(counts: Sequence[int], shares: Sequence[float]) -> float | None:
    """Sample-ratio mismatch: chi-square p-value of observed routed counts against the shares.

    >>> round(srm_pvalue([4500, 5500], [0.5, 0.5]), 12) < 0.001
    True
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    if total == 0:
        return None
    return float(stats.chisquare(counts, f_exp=np.asarray(shares, dtype=float) * total).pvalue)


# --- analysis of a stored experiment ------------------------------------------------------------------

@dataclass(frozen=True)
class ExperimentAnalysis:
    experiment: dict
    as_of: str
    arms: pd.DataFrame  # per arm: model_id, share, served, n, MAE, RMSE, MAPE, direction %
    comparison: ArmComparison
    observations: pd.DataFrame  # the predictions used: arm, model_id, as_of, target_date, loss, abs_error...
    track: pd.DataFrame  # per daily look: date, comparison, n, p_sequential, p_fixed
    winner: str | None
    winner_model_id: str | None
    significant: bool
    improvement_pct: float
    planned_end_reached: bool
    recommendation: str
    decision_rule: str = DECISION_RULE

    def results_csv(self) -> str:
        """Per-arm results and every prediction used, as one CSV (the page's download)."""
        head = self.arms.assign(section="arm_summary")
        rows = self.observations.assign(section="prediction")
        return pd.concat([head, rows], ignore_index=True).to_csv(index=False)


def first_scored_day(experiment: Mapping, db: sqlite_utils.Database) -> str:
    """The first day on which no arm is inside its training window: the latest arm train_end
    (a forecast made on train_end targets the next, unseen close; see core.predict.in_training_window)."""
    return max(get_model(a["model_id"], db=db)["train_end"] for a in experiment["arms"])


def _observations(experiment: dict, as_of: str | None, db: sqlite_utils.Database) -> pd.DataFrame:
    """Predictions of the experiment made up to `as_of`; an actual whose day is after `as_of` is
    not known then, so it is blanked (the request still counts for the sample-ratio check).

    Rows made on a day inside any arm's training window (logged before that was refused) are left
    out: a model scored on the closes it was trained on could win on in-sample luck.
    """
    clause, params = ("AND as_of <= ?", [as_of]) if as_of else ("", [])
    first_scored = first_scored_day(experiment, db)
    frame = pd.read_sql_query(
        "SELECT id, arm, model_id, as_of, target_date, request_key, served, last_close, predicted_close, "
        "CASE WHEN ? IS NULL OR target_date <= ? THEN actual_close END AS actual_close "
        f"FROM predictions WHERE experiment_id = ? AND as_of >= ? {clause} ORDER BY target_date, id",
        db.conn, params=[as_of, as_of, experiment["id"], first_scored, *params],
    )
    frame["abs_error"] = (frame["predicted_close"] - frame["actual_close"]).abs()
    frame["ape"] = frame["abs_error"] / frame["actual_close"] * 100
    frame["loss"] = frame["abs_error"] if experiment["metric"] == "mae" else frame["ape"]
    frame["direction_hit"] = np.where(
        frame["last_close"].notna() & frame["actual_close"].notna(),
        np.sign(frame["predicted_close"] - frame["last_close"]) == np.sign(frame["actual_close"] - frame["last_close"]),
        np.nan,
    )
    return frame


def _arm_table(experiment: dict, used: pd.DataFrame, all_rows: pd.DataFrame) -> pd.DataFrame:
    served = all_rows[all_rows["served"] == 1].groupby("arm").size()
    grouped = used.groupby("arm")
    rows = []
    for arm in experiment["arms"]:
        name = arm["arm"]
        group = grouped.get_group(name) if name in grouped.groups else used.iloc[0:0]
        rows.append({
            "arm": name, "model_id": arm["model_id"], "share %": arm["traffic_share"] * 100,
            "served": int(served.get(name, 0)), "n": len(group),
            "MAE $": group["abs_error"].mean(), "RMSE $": float(np.sqrt((group["abs_error"] ** 2).mean())),
            "MAPE %": group["ape"].mean(), "direction %": group["direction_hit"].astype(float).mean() * 100,
        })
    return pd.DataFrame(rows)


def analyze(experiment_id: int, as_of=None, db: sqlite_utils.Database | None = None) -> ExperimentAnalysis:
    """Per-arm metrics, the comparison (Welch or paired + always-valid mSPRT), SRM and a recommendation.

    Only predictions made on or before `as_of` (default: all) whose actual is known are compared.
    Shadow experiments compare arms on the same requests (paired); others as independent samples.
    """
    db = db or get_db()
    experiment = get_experiment(experiment_id, db=db)
    cutoff = _day(as_of) if as_of is not None else None
    rows = _observations(experiment, cutoff, db)
    known = rows.dropna(subset=["actual_close"])
    arm_names = [a["arm"] for a in experiment["arms"]]
    shares = [a["traffic_share"] for a in experiment["arms"]]
    if experiment["shadow"]:
        wide = known.pivot_table(index=["target_date", "request_key"], columns="arm", values="loss", aggfunc="first")
        wide = wide.reindex(columns=arm_names).dropna().sort_index()
        used = known.merge(wide.reset_index()[["target_date", "request_key"]], on=["target_date", "request_key"])
        days = wide.index.get_level_values("target_date")
        day_codes = pd.factorize(days, sort=True)[0]
        losses = {arm: wide[arm].to_numpy() for arm in arm_names}
        look_of = {arm: day_codes for arm in arm_names}
        look_days = np.unique(days)
    else:
        used = known[known["served"] == 1]
        look_days = np.unique(used["target_date"])
        codes = np.searchsorted(look_days, used["target_date"].to_numpy())
        losses = {arm: used.loc[used["arm"] == arm, "loss"].to_numpy() for arm in arm_names}
        look_of = {arm: codes[(used["arm"] == arm).to_numpy()] for arm in arm_names}
    served_counts = rows[rows["served"] == 1].groupby("arm").size().reindex(arm_names, fill_value=0).to_dict()
    comparison = compare_arms(losses, shares, experiment["confidence_level"], experiment["min_samples"],
                              paired=experiment["shadow"], served_counts=served_counts, looks=look_of)
    track = comparison.track.assign(date=lambda t: np.asarray(look_days)[t["look"]] if len(look_days) else [])
    last_day = cutoff or (str(rows["as_of"].max()) if len(rows) else experiment["start_date"])
    end_reached = last_day >= experiment["end_date"] or experiment["status"] != "running"
    winner_model = next((a["model_id"] for a in experiment["arms"] if a["arm"] == comparison.winner), None)
    return ExperimentAnalysis(
        experiment=experiment, as_of=last_day, arms=_arm_table(experiment, used, rows), comparison=comparison,
        observations=used.drop(columns=["loss"]).reset_index(drop=True), track=track, winner=comparison.winner,
        winner_model_id=winner_model, significant=comparison.significant, improvement_pct=comparison.improvement_pct,
        planned_end_reached=end_reached, recommendation=recommend(experiment, comparison, end_reached),
    )


def recommend(experiment: dict, result: ArmComparison, planned_end_reached: bool) -> str:
    """The decision in one or two plain sentences."""
    metric = experiment["metric"].upper()
    if result.srm_flag:
        return (f"Sample ratio mismatch (chi-square p = {result.srm_p:.2g} < {SRM_ALPHA}): the arms did not get "
                "the traffic they were configured for. Find the routing problem before trusting any result.")
    if not result.enough_samples:
        short = ", ".join(f"{a} {result.n[a]}/{experiment['min_samples']}" for a in result.arms
                          if result.n[a] < experiment["min_samples"])
        return f"Keep collecting: too few predictions with known outcomes yet ({short}). No winner is declared before that."
    best = min(result.comparisons, key=lambda c: c.p_sequential)
    if result.winner and result.winner != result.arms[0]:
        model = next(a["model_id"] for a in experiment["arms"] if a["arm"] == result.winner)
        return (f"Deploy arm {result.winner} ({model}): its {metric} is {result.improvement_pct:.1f}% lower than the "
                f"control's, significant under the peeking-safe rule (p = {best.p_sequential:.3g}).")
    if result.winner:
        return (f"Keep the control (arm {result.winner}): every challenger's {metric} is significantly higher "
                f"(its {metric} is {result.improvement_pct:.1f}% lower than the best challenger's).")
    if experiment["status"] != "running":
        return (f"Stopped on {experiment['stopped_at']} without a significant difference "
                f"(best always-valid p = {best.p_sequential:.3g}); nothing was deployed by the test.")
    if planned_end_reached:
        return (f"No significant difference by the planned end date (best always-valid p = {best.p_sequential:.3g}): "
                "keep the control, or extend the test if a small difference would matter.")
    return (f"No significant difference yet (best always-valid p = {best.p_sequential:.3g}, needed <= "
            f"{result.alpha_per_comparison:.3g}); keep the test running until {experiment['end_date']}.")


# --- stop, simulate -----------------------------------------------------------------------------------

def stop(
    experiment_id: int, deploy_winner: bool = True, as_of=None, actor: str = "user", override: bool = False,
    db: sqlite_utils.Database | None = None,
) -> dict:
    """Stop a running experiment, record the winner and (optionally) deploy it, all in one transaction.

    If the registry refuses the deploy (e.g. a certification gate), nothing is changed and the
    registry's error propagates: the caller can retry with `override=True`, which is passed on to
    `core.registry.deploy`.
    """
    db = db or get_db()
    deployed = None
    with transaction(db):  # analysis and stop under one write lock: two stops cannot both succeed
        analysis = analyze(experiment_id, as_of=as_of, db=db)
        experiment = analysis.experiment
        if experiment["status"] != "running":
            raise ExperimentError(f"Experiment {experiment['name']} is already {experiment['status']}.")
        if deploy_winner and analysis.winner_model_id and analysis.comparison.srm_flag and not override:
            raise ExperimentError(
                f"Experiment {experiment['name']} has a sample-ratio mismatch (chi-square p = "
                f"{analysis.comparison.srm_p:.2g}): the traffic split is broken, so its winner cannot be trusted. "
                "Stop it without deploying, or deploy with an explicit override."
            )
        if deploy_winner and analysis.winner_model_id and (in_sample := in_sample_days(experiment, analysis.observations, db)):
            raise ExperimentError(
                f"Experiment {experiment['name']}'s result cannot deploy: {len(in_sample)} analysed day(s) ({in_sample[0]} to "
                f"{in_sample[-1]}) are inside an arm's training window, so a model was scored on closes it was trained on. "
                "Stop it without deploying."
            )
        db.execute("UPDATE experiments SET status = 'stopped', winner = ?, stopped_at = ? WHERE id = ? AND status = 'running'",
                   [analysis.winner, analysis.as_of, experiment["id"]])
        current = deployed_model(experiment["symbol"], db=db)
        if deploy_winner and analysis.winner_model_id and (current is None or current["model_id"] != analysis.winner_model_id):
            extra = {"override": True} if override else {}
            deploy(analysis.winner_model_id, actor=actor, db=db, expected_champion=current["model_id"] if current else None,
                   reason=f"A/B test {experiment['name']}: arm {analysis.winner} won", **extra)
            deployed = analysis.winner_model_id
        audit(db, actor, "stop_experiment", f"experiment:{experiment['id']}", {
            "name": experiment["name"], "symbol": experiment["symbol"], "as_of": analysis.as_of,
            "winner": analysis.winner, "winner_model_id": analysis.winner_model_id, "deployed": deployed,
            "override": override, "decision_rule": analysis.decision_rule, "improvement_pct": analysis.improvement_pct,
            "p_sequential": [c.p_sequential for c in analysis.comparison.comparisons],
            "p_fixed": [c.p_fixed for c in analysis.comparison.comparisons], "srm_p": analysis.comparison.srm_p,
            "n": analysis.comparison.n, "recommendation": analysis.recommendation,
        })
    log.info("experiment %d stopped: winner %s, deployed %s", experiment["id"], analysis.winner, deployed)
    return {"experiment_id": experiment["id"], "winner": analysis.winner, "winner_model_id": analysis.winner_model_id,
            "deployed": deployed, "recommendation": analysis.recommendation}


def replay_bounds(experiment: Mapping, db: sqlite_utils.Database | None = None) -> tuple[str, str]:
    """(first, last) day a replay of `experiment` may cover: its own dates, from the first day every
    arm can be scored on, up to the last day with prices."""
    db = db or get_db()
    last_data = _day(load_prices(experiment["symbol"], db=db).index[-1])
    return max(experiment["start_date"], first_scored_day(experiment, db)), min(experiment["end_date"], last_data)


def simulate(experiment_id: int, start, end, db: sqlite_utils.Database | None = None) -> int:
    """Replay the trading days in [start, end] through the serving path while the experiment runs.

    Each day is one request (`predict` routes it to an arm and logs it once: a day already replayed
    returns its logged row, so replaying again changes nothing); actuals are back-filled at the end.
    Returns the number of days replayed. Refused, before anything is written: days outside the
    test's dates or inside an arm's training window (they would score a model on the data it was
    trained on), and arms whose artifacts do not verify.
    """
    db = db or get_db()
    experiment = get_experiment(experiment_id, db=db)
    if experiment["status"] != "running":
        raise ExperimentError(f"Experiment {experiment['name']} is {experiment['status']}: only a running test can be replayed.")
    first, last = replay_bounds(experiment, db=db)
    lo, hi = _day(start), _day(end)
    if lo > hi:
        raise ExperimentError(f"The replay starts ({lo}) after it ends ({hi}).")
    if first > last:
        raise ExperimentError(f"Experiment {experiment['name']} has no day that can be replayed: its arms are trained up "
                              f"to {first}, after its last day with data {last}.")
    if lo < first or hi > last:
        why = (f"the test runs {experiment['start_date']} to {experiment['end_date']}"
               + (f" and its arms were trained on the closes up to {first}" if first > experiment["start_date"] else "")
               + (f"; prices end on {last}" if last < experiment["end_date"] else ""))
        raise ExperimentError(f"Replay {lo} to {hi} is refused: {why}. The first allowed day is {first}, the last {last}.")
    _verify_arms([(a["arm"], a["model_id"]) for a in experiment["arms"]], db)
    days = load_prices(experiment["symbol"], start=lo, end=hi, db=db).index
    for day in days:
        predict(experiment["symbol"], day, db=db)
    backfill_actuals(days[-1], symbol=experiment["symbol"], db=db)
    log.info("experiment %d: replayed %d days %s..%s", experiment["id"], len(days), _day(days[0]), _day(days[-1]))
    return len(days)
