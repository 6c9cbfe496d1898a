"""Sequential change detection on a model's daily innovations: CUSUM banks, their persisted state, alarms.

Pure statistics (numpy/pandas, `core.config`, `core.calibration`; no database). The window check in
`core/drift.py` says *what* changed; these detectors say *when*: as soon as the evidence allows at a
fixed false-alarm budget, with an estimate of the day the change started.

`DETECTORS`, each a bank of Page CUSUMs (the size of a change is unknown: drifts k in sd of the
standardised innovation u; the best-fitting k detects first) on u = (transform - reference mean) /
reference sd, see `core.calibration.Standardiser`:
- `returns_mean`: daily log return, robust z (reference median, 1.4826 MAD) clipped at +-4 so one
  crash day cannot alarm alone; two-sided, k = 0.25, 0.5, 1.
- `returns_variance`: log(1 + z^2) of the same unclipped z (like z^2 for small moves, 2 log|z| for
  big ones); up = volatility rises, down = it falls; k = 0.5, 1, 2 (`VARIANCE_DRIFTS`: a doubling of
  volatility moves u by about 1 sd on the bundled series, a crash regime by several; a k = 0.25
  member needs a threshold near 20 at this budget, too slow to help, and its share of the budget
  slowed the others: bench/drift_quality.py measured 41 days against the oracle's 25 with
  0.25-0.5-1 and 24 with this bank, the variance detector alone).
- `error`: |error| / validation MAE (a direction model: log loss / its validation mean), robust z clipped
  at +-4; one-sided (up); k = 0.25, 0.5, 1.
- `feature_scale`: log(1 + z^2) of each feature's day-to-day change (a rolling feature's level is
  strongly autocorrelated, its change far less); the maximum over features against one threshold;
  two-sided; k = 0.5 (slow drifts, shrinking or frozen features), 2 and 4 (units changes: x10 makes
  a jump of many sd on the day, then several sd a day). `range_alarms` adds values beyond the
  reference range widened by the range itself on each side (as `core/drift.py`).

Budget: `fit_profile` calibrates every threshold on the model's reference window (block-bootstrapped
AR sieve, `core.calibration.calibrate`) so that all its detectors *together* raise one false alarm
per `MLSA_DRIFT_ARL_DAYS` (250) trading days on average: about one per model per year. Measured
delays next to the oracle CUSUM: README, "Sequential drift detection" (`bench/drift_quality.py`).

References: E. S. Page (1954), Continuous inspection schemes, Biometrika 41; G. Lorden (1971),
Procedures for reacting to a change in distribution, Ann. Math. Stat. 42; onset = the CUSUM's last
zero (Page 1954; D. C. Montgomery, Introduction to Statistical Quality Control, ch. 9).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.calibration import Standardiser, Stream, calibrate, calm_days

DRIFTS = (0.25, 0.5, 1.0)
VARIANCE_DRIFTS = (0.5, 1.0, 2.0)
_NAT = np.iinfo(np.int64).min  # "no day" in the vectorised state


def _day(value: Any) -> str | None:
    return None if value is None else str(np.datetime64(value, "D"))


@dataclass(frozen=True)
class DetectorSpec:
    """What a detector watches (signal, in words), its input, transform, clip, drift bank and sides."""

    signal: str
    source: str  # "return" | "error" | "feature_change"
    transform: str
    clip: float
    drifts: tuple[float, ...]
    two_sided: bool


DETECTORS: dict[str, DetectorSpec] = {
    "returns_mean": DetectorSpec("mean daily return", "return", "level", 4.0, DRIFTS, True),
    "returns_variance": DetectorSpec("volatility of daily returns", "return", "log_square", np.inf, VARIANCE_DRIFTS,
                                     True),
    "error": DetectorSpec("model error / its validation mean", "error", "level", 4.0, DRIFTS, False),
    "feature_scale": DetectorSpec("scale of a feature", "feature_change", "log_square", np.inf, (0.5, 2.0, 4.0),
                                  True),
}


class Cusum:
    """Page's CUSUM, as a bank of drifts, one- or two-sided, over one or more streams of innovations.

    For every stream f, drift k and side (up watches u, down watches -u):
    S_t = max(0, S_{t-1} + side * u_t - k); the detector alarms on the first day some S_t >= h_k
    (the component with the largest S / h is reported). The onset estimate is the first day after
    that statistic was last at zero. After an alarm the next update starts again from zero.

    False alarms: with thresholds from `fit_profile`, a model's detectors together alarm once per
    `MLSA_DRIFT_ARL_DAYS` (250) trading days on calm data; measured delays in README.
    Parameters: thresholds, one h per drift (from `core.calibration.calibrate`); drifts, the
    reference values k in sd of u; two_sided, watch decreases too; streams, one name per input
    stream (several streams share the thresholds); name, the detector's name in alarms.
    `update(u, day)` is O(streams x drifts); a NaN stream is skipped that day; all-NaN skips the day.

    >>> cusum = Cusum(thresholds=[3.0], drifts=[0.5], two_sided=False, name="demo")
    >>> for day, u in enumerate([0.1, -0.4, 0.2, 1.5, 1.5, 1.5], start=1):
    ...     _ = cusum.update(u, day=f"2024-01-0{day}")
    >>> cusum.drift_detected, cusum.alarm["onset_day"], cusum.alarm["statistic"]
    (True, '2024-01-04', 3.0)

    Reference: E. S. Page (1954), Continuous inspection schemes, Biometrika 41(1/2), 100-115.
    """

    def __init__(self, thresholds: Sequence[float], drifts: Sequence[float] = DRIFTS, two_sided: bool = True,
                 streams: Sequence[str] = ("",), name: str = "cusum"):
        self.thresholds, self.drifts = tuple(float(h) for h in thresholds), tuple(float(k) for k in drifts)
        if len(self.thresholds) != len(self.drifts) or min(self.thresholds, default=0) <= 0:
            raise ValueError(f"thresholds: expected {len(self.drifts)} positive values (one per drift), "
                             f"got {list(thresholds)}")
        self.two_sided, self.streams, self.name = bool(two_sided), tuple(streams), name
        self.n, self.alarms, self.last_alarm, self.last_alarm_day, self.day = 0, 0, 0, None, None
        self._reset()

    def _reset(self) -> None:
        shape = (2 if self.two_sided else 1, len(self.streams), len(self.drifts))
        self.stat = [[[0.0] * shape[2] for _ in range(shape[1])] for _ in range(shape[0])]
        self.start = [[[0] * shape[2] for _ in range(shape[1])] for _ in range(shape[0])]
        self.start_day = [[[None] * shape[2] for _ in range(shape[1])] for _ in range(shape[0])]
        self.alarm: dict | None = None

    @property
    def drift_detected(self) -> bool:
        return self.alarm is not None

    def update(self, u: Any, day: Any = None) -> "Cusum":
        values = [float(v) for v in np.atleast_1d(np.asarray(u, dtype=float))]
        if len(values) != len(self.streams):
            raise ValueError(f"u: expected {len(self.streams)} values (one per stream), got {len(values)}")
        if all(v != v for v in values):
            return self
        if self.alarm is not None:
            self._reset()
        self.n, self.day = self.n + 1, _day(day)
        best = None
        for side, sign in enumerate((1.0, -1.0)[: len(self.stat)]):
            for f, v in enumerate(values):
                if v != v:
                    continue
                for j, (k, h) in enumerate(zip(self.drifts, self.thresholds)):
                    prev = self.stat[side][f][j]
                    new = max(0.0, prev + sign * v - k)
                    if new == 0.0:
                        self.start[side][f][j], self.start_day[side][f][j] = 0, None
                    elif prev == 0.0:
                        self.start[side][f][j], self.start_day[side][f][j] = self.n, self.day
                    self.stat[side][f][j] = new
                    if new >= h and (best is None or new / h > best[0]):
                        best = (new / h, side, f, j)
        if best is not None:
            _, side, f, j = best
            self.alarms, self.last_alarm, self.last_alarm_day = self.alarms + 1, self.n, self.day
            self.alarm = {"direction": ("up", "down")[side], "stream": self.streams[f], "drift": self.drifts[j],
                          "statistic": self.stat[side][f][j], "threshold": self.thresholds[j],
                          "onset": self.start[side][f][j], "onset_day": self.start_day[side][f][j]}
        return self

    def to_dict(self) -> dict:
        """A JSON-safe dict of the parameters and the state; `Cusum.from_dict` restores it exactly."""
        keys = ("name", "thresholds", "drifts", "two_sided", "streams", "n", "alarms", "last_alarm",
                "last_alarm_day", "day", "stat", "start", "start_day", "alarm")
        return copy.deepcopy({k: list(v) if isinstance(v, tuple) else v for k, v in
                              ((k, getattr(self, k)) for k in keys)})

    @classmethod
    def from_dict(cls, data: Mapping) -> "Cusum":
        out = cls(data["thresholds"], data["drifts"], data["two_sided"], data["streams"], data["name"])
        for key in ("n", "alarms", "last_alarm", "last_alarm_day", "day", "alarm"):
            setattr(out, key, data[key])
        out.stat = [[[float(v) for v in row] for row in side] for side in data["stat"]]
        out.start = [[[int(v) for v in row] for row in side] for side in data["start"]]
        out.start_day = [[list(row) for row in side] for side in data["start_day"]]
        return out


class CusumArray:
    """One detector's state for N models at once: one day's innovations for all N in one `update`.

    Same recursion, same results as N `Cusum` objects (tested); arrays of shape (N, sides, streams,
    drifts). Build with `from_states`, write back with `to_states`. All models share drifts, sides
    and streams; thresholds are per model, (N, drifts).
    """

    def __init__(self, thresholds: np.ndarray, drifts: Sequence[float] = DRIFTS, two_sided: bool = True,
                 streams: Sequence[str] = ("",), name: str = "cusum"):
        self.thresholds = np.atleast_2d(np.asarray(thresholds, dtype=float))
        self.drifts, self.two_sided, self.streams, self.name = np.asarray(drifts, float), two_sided, tuple(streams), name
        n_models, shape = len(self.thresholds), (len(self.thresholds), 1 + two_sided, len(streams), len(drifts))
        self.stat, self.start, self.start_day = np.zeros(shape), np.zeros(shape, np.int64), np.full(shape, _NAT)
        self.n, self.alarms, self.last_alarm = (np.zeros(n_models, np.int64) for _ in range(3))
        self.last_alarm_day, self.day = np.full(n_models, _NAT), np.full(n_models, _NAT)
        self.alarm_at = np.full(n_models, -1)  # flat index (side, stream, drift) of today's alarm, -1 for none

    @property
    def drift_detected(self) -> np.ndarray:
        return self.alarm_at >= 0

    def update(self, u: np.ndarray, day: Any = None) -> "CusumArray":
        """u: (N,) or (N, streams); NaN skips a stream, an all-NaN row skips that model's day."""
        values = np.asarray(u, dtype=float).reshape(len(self.n), len(self.streams))
        seen = ~np.isnan(values).all(axis=1)
        restart = seen & (self.alarm_at >= 0)
        self.stat[restart], self.start[restart], self.start_day[restart] = 0.0, 0, _NAT
        self.n[seen] += 1
        today = _NAT if day is None else np.datetime64(day, "D").astype(np.int64)
        self.day[seen] = today
        signs = np.array([1.0, -1.0][: self.stat.shape[1]])[None, :, None, None]
        prev = self.stat
        new = np.maximum(0.0, prev + signs * values[:, None, :, None] - self.drifts)
        observed = np.broadcast_to(~np.isnan(values)[:, None, :, None], new.shape)
        new = np.where(observed, new, prev)
        begins = observed & (new > 0.0) & (prev == 0.0)
        zero = observed & (new == 0.0)
        self.start = np.where(zero, 0, np.where(begins, self.n[:, None, None, None], self.start))
        self.start_day = np.where(zero, _NAT, np.where(begins, today, self.start_day))
        self.stat = new
        ratio = np.where(new >= self.thresholds[:, None, None, :], new / self.thresholds[:, None, None, :], -np.inf)
        flat = ratio.reshape(len(ratio), -1)
        hit = seen & np.isfinite(flat).any(axis=1)
        self.alarm_at = np.where(seen, np.where(hit, flat.argmax(axis=1), -1), self.alarm_at)
        self.alarms[hit] += 1
        self.last_alarm[hit], self.last_alarm_day[hit] = self.n[hit], today
        return self

    def alarm_summary(self) -> dict[str, np.ndarray]:
        """Today's alarms as arrays over the N models (-1 / NaN where none): detected, side (0 up,
        1 down), stream and drift indices, statistic, threshold, onset (observation index)."""
        hit = self.alarm_at >= 0
        side, stream, drift = np.unravel_index(np.maximum(self.alarm_at, 0), self.stat.shape[1:])
        rows = np.arange(len(hit))
        flat = self.alarm_at.clip(0)
        return {"detected": hit, "side": np.where(hit, side, -1), "stream": np.where(hit, stream, -1),
                "drift": np.where(hit, drift, -1),
                "statistic": np.where(hit, self.stat.reshape(len(hit), -1)[rows, flat], np.nan),
                "threshold": np.where(hit, self.thresholds[rows, drift], np.nan),
                "onset": np.where(hit, self.start.reshape(len(hit), -1)[rows, flat], -1)}

    @classmethod
    def from_states(cls, states: Sequence[Cusum | Mapping]) -> "CusumArray":
        items = [s if isinstance(s, Cusum) else Cusum.from_dict(s) for s in states]
        first = items[0]
        out = cls(np.array([s.thresholds for s in items]), first.drifts, first.two_sided, first.streams, first.name)
        out.stat = np.array([s.stat for s in items], dtype=float)
        out.start = np.array([s.start for s in items], dtype=np.int64)
        out.start_day = np.array([[[[_to_int(d) for d in row] for row in side] for side in s.start_day] for s in items],
                                 dtype=np.int64).reshape(out.stat.shape)
        for key in ("n", "alarms", "last_alarm"):
            setattr(out, key, np.array([getattr(s, key) for s in items], dtype=np.int64))
        out.last_alarm_day = np.array([_to_int(s.last_alarm_day) for s in items], dtype=np.int64)
        out.day = np.array([_to_int(s.day) for s in items], dtype=np.int64)
        shape = out.stat.shape[1:]
        out.alarm_at = np.array([-1 if s.alarm is None else int(np.ravel_multi_index(
            (("up", "down").index(s.alarm["direction"]), s.streams.index(s.alarm["stream"]),
             s.drifts.index(s.alarm["drift"])), shape)) for s in items])
        return out

    def to_states(self) -> list[Cusum]:
        out = []
        for i in range(len(self.n)):
            state = Cusum(self.thresholds[i].tolist(), self.drifts.tolist(), self.two_sided, self.streams, self.name)
            state.stat, state.start = self.stat[i].tolist(), self.start[i].tolist()
            state.start_day = [[[_from_int(d) for d in row] for row in side] for side in self.start_day[i].tolist()]
            state.n, state.alarms, state.last_alarm = int(self.n[i]), int(self.alarms[i]), int(self.last_alarm[i])
            state.last_alarm_day, state.day = _from_int(self.last_alarm_day[i]), _from_int(self.day[i])
            if self.alarm_at[i] >= 0:
                side, f, j = np.unravel_index(self.alarm_at[i], self.stat.shape[1:])
                state.alarm = {"direction": ("up", "down")[side], "stream": self.streams[f],
                               "drift": float(self.drifts[j]), "statistic": float(self.stat[i, side, f, j]),
                               "threshold": float(self.thresholds[i, j]), "onset": int(self.start[i, side, f, j]),
                               "onset_day": _from_int(self.start_day[i, side, f, j])}
            out.append(state)
        return out


def _to_int(day: str | None) -> int:
    return _NAT if day is None else int(np.datetime64(day, "D").astype(np.int64))


def _from_int(value: int) -> str | None:
    return None if int(value) == _NAT else str(np.datetime64(int(value), "D"))


def _feature_changes(features: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    return np.diff(features[list(columns)].to_numpy(dtype=float), axis=0)


def _aligned(series: dict[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
    """The reference series on one day axis, aligned on their last day (NaN-padded at the front;
    non-finite values become NaN: no observation that day)."""
    given = {k: np.asarray(v, dtype=float) for k, v in series.items() if v is not None}
    n = max(len(v) for v in given.values())
    out: dict[str, np.ndarray | None] = dict.fromkeys(series)
    for key, values in given.items():
        padded = np.full((n,) + values.shape[1:], np.nan)
        padded[n - len(values):] = np.where(np.isfinite(values), values, np.nan)
        out[key] = padded
    return out


def fit_profile(returns: Any, errors: Any = None, features: pd.DataFrame | None = None,
                arl_days: float | None = None, seed: int = 0, n_paths: int = 400, horizon: int = 500) -> dict:
    """Everything the detectors need about one model, fitted on its reference window; JSON-safe.

    returns: the reference (training) window's daily log returns; errors: optional, the model's
    absolute errors on its validation days divided by its validation MAE; features: optional, the
    reference feature frame (columns with fewer than 20 distinct values, like day_of_week, are
    only range-checked). The three are aligned on their last day (the reference's end), so they
    are resampled together and their correlation counts in the joint budget. arl_days: the
    false-alarm budget (default `MLSA_DRIFT_ARL_DAYS`). Returns {"arl_days", "arl_estimate",
    "component_arl", "block_length", "seed", "detectors": {name: {"signal", "source", "streams",
    "standardiser", "drifts", "two_sided", "thresholds"}}, "range": {"features", "low", "high"}}.
    Runs the bootstrap calibration: ~0.1-0.3 s.
    """
    names: dict[str, list[str]] = {"return": ["return"], "error": ["error"], "feature_change": []}
    changes = None
    profile: dict[str, Any] = {"range": {"features": [], "low": [], "high": []}}
    if features is not None:
        numeric = features.select_dtypes("number")
        names["feature_change"] = [c for c in numeric.columns if numeric[c].nunique() >= 20]
        changes = _feature_changes(features, names["feature_change"]) if names["feature_change"] else None
        low, high = numeric.min(), numeric.max()
        profile["range"] = {"features": list(numeric.columns), "low": (low - (high - low)).tolist(),
                            "high": (high + (high - low)).tolist()}
    raw = _aligned({"return": returns, "error": errors, "feature_change": changes})
    detectors, streams = {}, {}
    for name, spec in DETECTORS.items():
        reference = raw[spec.source]
        if reference is None:
            continue
        standardiser = Standardiser.fit(reference, spec.transform, spec.clip)
        streams[name] = Stream(standardiser(reference), spec.drifts, spec.two_sided, group="model")
        detectors[name] = {"signal": spec.signal, "source": spec.source, "streams": names[spec.source],
                           "standardiser": standardiser.to_dict(), "drifts": list(spec.drifts),
                           "two_sided": spec.two_sided}
    calibration = calibrate(streams, arl_days, n_paths=n_paths, horizon=horizon, seed=seed,
                            calm=calm_days(raw["return"]))
    for name, thresholds in calibration.thresholds.items():
        detectors[name]["thresholds"] = list(thresholds)
    return profile | {"arl_days": calibration.target, "arl_estimate": calibration.arl,
                      "component_arl": calibration.component_arl, "block_length": calibration.block_length,
                      "seed": seed, "detectors": detectors}


def new_detectors(profile: Mapping) -> dict[str, Cusum]:
    """Fresh detectors (statistics at zero) for a profile from `fit_profile`."""
    return {name: Cusum(d["thresholds"], d["drifts"], d["two_sided"], d["streams"], name)
            for name, d in profile["detectors"].items()}


def stack_standardisers(profiles: Sequence[Mapping]) -> dict[str, Standardiser]:
    """Each detector's standardisers of N models stacked into one (build once, reuse every day)."""
    return {name: Standardiser.stack_stored([p["detectors"][name]["standardiser"] for p in profiles])
            for name in profiles[0]["detectors"]}


def innovations_many(profiles: Sequence[Mapping], returns: Any = None, errors: Any = None, features: Any = None,
                     previous_features: Any = None, standardisers: Mapping[str, Standardiser] | None = None
                     ) -> dict[str, np.ndarray]:
    """One day's standardised innovations u for N models: detector -> (N,) or (N, streams) array.

    returns, errors: (N,) raw daily log returns and |error| / validation MAE; features,
    previous_features: (N, streams) raw feature values today and on the previous trading day, in
    the order of the profiles' feature_scale streams (all profiles must share it). A missing input
    leaves its detectors out; NaN means "no observation" (the detector skips that model's day).
    standardisers: `stack_standardisers(profiles)`, to skip rebuilding them.
    """
    given = {"return": returns, "error": errors,
             "feature_change": None if features is None or previous_features is None
             else np.asarray(features, dtype=float) - np.asarray(previous_features, dtype=float)}
    standardisers = standardisers or stack_standardisers(profiles)
    out = {}
    for name, detector in profiles[0]["detectors"].items():
        raw = given[detector["source"]]
        if raw is not None:
            shape = (len(profiles),) + ((len(detector["streams"]),) if len(detector["streams"]) > 1 else ())
            out[name] = standardisers[name](np.asarray(raw, dtype=float).reshape(shape))
    return out


def innovations(profile: Mapping, ret: float | None = None, error: float | None = None,
                features: Mapping | None = None, previous_features: Mapping | None = None) -> dict[str, Any]:
    """One model's standardised innovations for one day (see `innovations_many`); features by name."""
    streams = profile["detectors"].get("feature_scale", {}).get("streams", [])
    def row(values):
        return None if values is None else np.array([[float(values[c]) for c in streams]])
    u = innovations_many([profile], None if ret is None else [ret], None if error is None else [error],
                         row(features), row(previous_features))
    return {name: (float(v[0]) if v.ndim == 1 else v[0]) for name, v in u.items()}


def alarm_records(states: Mapping[str, Cusum | Mapping], as_of: Any = None) -> list[dict]:
    """The day's alarms as records: detector, signal, stream, direction, statistic, threshold, drift,
    onset_day / onset_index (estimated start of the change), days_since_onset, as_of."""
    records = []
    for name, state in states.items():
        state = state if isinstance(state, Cusum) else Cusum.from_dict(state)
        if state.alarm is None:
            continue
        alarm = state.alarm
        records.append({"detector": name, "signal": DETECTORS[name].signal if name in DETECTORS else name,
                        "stream": alarm["stream"], "direction": alarm["direction"],
                        "statistic": alarm["statistic"], "threshold": alarm["threshold"], "drift": alarm["drift"],
                        "onset_day": alarm["onset_day"], "onset_index": alarm["onset"],
                        "days_since_onset": state.n - alarm["onset"] + 1, "as_of": _day(as_of) or state.day})
    return records


def range_alarms(profile: Mapping, features: Mapping, as_of: Any = None) -> list[dict]:
    """Values beyond the reference range widened by the range itself on each side (a units or
    pipeline error: no calibration, never seen on calm data). Statistic: the distance beyond the
    range, in reference ranges; onset: today."""
    limits = profile["range"]
    records = []
    for column, low, high in zip(limits["features"], limits["low"], limits["high"]):
        value = float(features[column]) if column in features else np.nan
        if value > high or value < low:
            span = max((high - low) / 3.0, 1e-300)
            records.append({"detector": "feature_range", "signal": "values far outside the training range",
                            "stream": column, "direction": "up" if value > high else "down",
                            "statistic": (value - high if value > high else low - value) / span + 1.0,
                            "threshold": 1.0, "drift": None, "onset_day": _day(as_of), "onset_index": None,
                            "days_since_onset": 1, "as_of": _day(as_of)})
    return records
