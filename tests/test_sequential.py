"""Sequential change detection (core/sequential.py, core/calibration.py): hand-computed CUSUM paths, onset,
state persistence, replay, vectorised = scalar, and thresholds that deliver their target ARL."""
from __future__ import annotations

import doctest
import json

import numpy as np
import pandas as pd
import pytest

from core import calibration, sequential
from core.calibration import Standardiser, Stream, calibrate, siegmund_arl
from core.sequential import (Cusum, CusumArray, alarm_records, fit_profile, innovations, innovations_many,
                             new_detectors, range_alarms)


def days(n: int, start: str = "2024-01-01") -> list[str]:
    return [str(d.date()) for d in pd.bdate_range(start, periods=n)]


def test_doctests():
    for module in (sequential, calibration):
        assert doctest.testmod(module).failed == 0


def test_one_sided_path_by_hand():
    # k = 0.5, h = 3: S_t = max(0, S_{t-1} + u_t - 0.5)
    #  u:  0.1  -0.4  0.2  1.5  1.5  1.5
    #  S:  0    0     0    1.0  2.0  3.0  -> alarm on day 6, the excursion started on day 4
    cusum = Cusum([3.0], [0.5], two_sided=False)
    path = []
    for u, day in zip([0.1, -0.4, 0.2, 1.5, 1.5, 1.5], days(6)):
        path.append(cusum.update(u, day).stat[0][0][0])
    assert path == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]
    assert cusum.drift_detected and cusum.alarm["onset"] == 4 and cusum.alarm["onset_day"] == days(6)[3]
    assert cusum.alarm["direction"] == "up" and cusum.alarm["statistic"] == 3.0
    cusum.update(0.0)  # the day after an alarm starts again from zero
    assert cusum.stat[0][0][0] == 0.0 and not cusum.drift_detected and cusum.alarms == 1


def test_two_sided_bank_by_hand():
    # k in (0.5, 1.0), h = 10 (no alarm); up: S+ = max(0, S+ + u - k); down: S- = max(0, S- - u - k)
    #  u:            1     -2    0.5   -1.5   3
    #  S+ k=0.5:     0.5   0     0     0      2.5
    #  S- k=0.5:     0     1.5   0.5   1.5    0
    #  S+ k=1.0:     0     0     0     0      2.0
    #  S- k=1.0:     0     1.0   0     0.5    0
    cusum = Cusum([10.0, 10.0], [0.5, 1.0], two_sided=True)
    up, down = [], []
    for u in [1.0, -2.0, 0.5, -1.5, 3.0]:
        cusum.update(u)
        up.append(list(cusum.stat[0][0]))
        down.append(list(cusum.stat[1][0]))
    assert up == [[0.5, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [2.5, 2.0]]
    assert down == [[0.0, 0.0], [1.5, 1.0], [0.5, 0.0], [1.5, 0.5], [0.0, 0.0]]
    assert not cusum.drift_detected and cusum.n == 5


def test_several_streams_and_missing_values():
    cusum = Cusum([2.0], [0.0], two_sided=False, streams=["a", "b"])
    cusum.update([1.0, np.nan])  # b not observed: its statistic stays
    cusum.update([np.nan, np.nan])  # nothing observed: the day is skipped
    assert cusum.n == 1 and cusum.stat[0] == [[1.0], [0.0]]
    cusum.update([0.5, 2.5])
    assert cusum.drift_detected and cusum.alarm["stream"] == "b" and cusum.alarm["statistic"] == 2.5


@pytest.mark.parametrize("size, direction", [(1.0, "up"), (3.0, "up"), (-2.0, "down")])
def test_onset_exact_on_noiseless_step(size, direction):
    calendar = days(40)
    cusum = Cusum([4.0, 4.0, 4.0], two_sided=True)
    for t, day in enumerate(calendar, start=1):
        cusum.update(0.0 if t < 21 else size, day)
        if cusum.drift_detected:
            break
    assert cusum.drift_detected and cusum.alarm["direction"] == direction
    assert cusum.alarm["onset"] == 21 and cusum.alarm["onset_day"] == calendar[20]
    assert alarm_records({"returns_mean": cusum})[0]["onset_day"] == calendar[20]


def _random_inputs(seed: int, n_models: int, n_days: int, streams: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = rng.standard_t(4, size=(n_days, n_models, streams)) + np.linspace(0, 1.5, n_days)[:, None, None]
    u[rng.random(u.shape) < 0.05] = np.nan
    u[rng.random((n_days, n_models)) < 0.05] = np.nan  # whole days without an observation
    return u


def test_vectorised_update_equals_scalar():
    n_models, n_days, names = 7, 80, ["a", "b", "c"]
    rng = np.random.default_rng(1)
    thresholds = rng.uniform(2.0, 8.0, size=(n_models, 3))
    scalar = [Cusum(h, streams=names, name="x") for h in thresholds]
    vector = CusumArray.from_states(scalar)
    for u, day in zip(_random_inputs(2, n_models, n_days, len(names)), days(n_days)):
        for state, row in zip(scalar, u):
            state.update(row, day)
        vector.update(u, day)
        assert [s.to_dict() for s in vector.to_states()] == [s.to_dict() for s in scalar]
    assert sum(s.alarms for s in scalar) > 0  # the comparison covered alarms and restarts


def test_state_survives_json_and_restart():
    u = _random_inputs(3, 1, 120, 2)[:, 0, :]
    calendar = days(120)
    straight = Cusum([5.0, 3.0], [0.25, 1.0], streams=["a", "b"], name="x")
    for row, day in zip(u, calendar):
        straight.update(row, day)
    restarted = Cusum([5.0, 3.0], [0.25, 1.0], streams=["a", "b"], name="x")
    for k, (row, day) in enumerate(zip(u, calendar)):
        if k in (37, 38, 90):  # serialise, "restart the process", restore, continue
            restarted = Cusum.from_dict(json.loads(json.dumps(restarted.to_dict())))
        restarted.update(row, day)
    assert restarted.to_dict() == straight.to_dict() and straight.alarms > 0
    # the vectorised state too, through the same plain dicts
    array = CusumArray.from_states([json.loads(json.dumps(Cusum([5.0, 3.0], [0.25, 1.0], streams=["a", "b"]).to_dict()))])
    for k, (row, day) in enumerate(zip(u, calendar)):
        if k == 60:
            array = CusumArray.from_states([json.loads(json.dumps(s.to_dict())) for s in array.to_states()])
        array.update(row[None, :], day)
    assert array.to_states()[0].to_dict() | {"name": "x"} == straight.to_dict()


def _reference(seed: int = 0, n: int = 600):
    rng = np.random.default_rng(seed)
    returns = 0.01 * rng.standard_t(5, size=n)
    errors = np.abs(rng.standard_t(5, size=n))
    errors /= errors.mean()
    level = np.cumsum(rng.normal(size=(n, 3)), axis=0) * 0.1
    features = pd.DataFrame(level, columns=["f1", "f2", "macd"]).assign(day_of_week=np.arange(n) % 5)
    return returns, errors, features


def test_profile_is_json_safe_and_replay_is_identical():
    returns, errors, features = _reference()
    profile = fit_profile(returns, errors, features, arl_days=250, seed=3)
    assert json.loads(json.dumps(profile)) == profile
    assert fit_profile(returns, errors, features, arl_days=250, seed=3) == profile  # same inputs, same thresholds
    assert set(profile["detectors"]) == {"returns_mean", "returns_variance", "error", "feature_scale"}
    assert profile["detectors"]["feature_scale"]["streams"] == ["f1", "f2", "macd"]  # day_of_week: range only

    rng = np.random.default_rng(4)
    live = [(0.01 * rng.standard_t(5) * (1 if t < 40 else 3), abs(rng.standard_t(5)) + (0 if t < 40 else 2))
            for t in range(80)]
    rows = features.iloc[-1].to_dict()

    def replay() -> list[dict]:
        detectors, records, previous = new_detectors(profile), [], rows
        for t, ((ret, err), day) in enumerate(zip(live, days(80))):
            today = {k: v + 0.01 * t for k, v in rows.items()}
            u = innovations(profile, ret, err, today, previous)
            for name, state in detectors.items():
                state.update(u[name], day)
            records += alarm_records(detectors, day)
            previous = today
        return records

    first = replay()
    assert first == replay() and first  # identical alarms; the volatility and error jump are seen
    assert {r["detector"] for r in first} & {"returns_variance", "error"}
    record = first[0]
    assert set(record) >= {"detector", "signal", "direction", "statistic", "threshold", "onset_day", "as_of"}
    assert record["statistic"] >= record["threshold"]


def test_innovations_many_matches_one_model():
    returns, errors, features = _reference(5)
    profiles = [fit_profile(returns * s, errors, features, arl_days=250, seed=s) for s in (1, 2)]
    today, before = features.iloc[-1], features.iloc[-2]
    names = profiles[0]["detectors"]["feature_scale"]["streams"]
    many = innovations_many(profiles, [0.02, -0.01], [1.5, np.nan], np.array([today[names]] * 2, dtype=float),
                            np.array([before[names]] * 2, dtype=float))
    stacked = sequential.stack_standardisers(profiles)  # the fast path = stacking the restored objects
    for name in profiles[0]["detectors"]:
        slow = Standardiser.stack([Standardiser.from_dict(p["detectors"][name]["standardiser"]) for p in profiles])
        for key in ("transform", "centre", "scale", "clip", "mean", "sd"):
            fast_value, slow_value = getattr(stacked[name], key), getattr(slow, key)
            assert np.shape(fast_value) == np.shape(slow_value)
            np.testing.assert_array_equal(fast_value, slow_value)
    for i, (ret, err) in enumerate([(0.02, 1.5), (-0.01, np.nan)]):
        one = innovations(profiles[i], ret, err, today, before)
        for name, value in one.items():
            np.testing.assert_array_equal(many[name][i], value)


def test_range_alarm_and_standardiser_round_trip():
    returns, errors, features = _reference(6)
    profile = fit_profile(returns, errors, features, arl_days=250)
    row = features.iloc[-1].to_dict() | {"macd": features["macd"].max() * 100}
    records = range_alarms(profile, row, "2024-05-01")
    assert [r["stream"] for r in records] == ["macd"] and records[0]["statistic"] > records[0]["threshold"]
    s = Standardiser.fit(features[["f1", "f2"]].to_numpy(), "log_square")
    back = Standardiser.from_dict(json.loads(json.dumps(s.to_dict())))
    np.testing.assert_array_equal(back(features[["f1", "f2"]].to_numpy()), s(features[["f1", "f2"]].to_numpy()))


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="one per drift"):
        Cusum([1.0], [0.25, 0.5])
    with pytest.raises(ValueError, match="one per stream"):
        Cusum([1.0], [0.5], streams=["a", "b"]).update(1.0)
    with pytest.raises(ValueError, match="arl_days"):
        calibrate({"x": Stream(np.zeros(100), (0.5,))}, arl_days=1)


def _empirical_arl(thresholds: list[dict], drifts: dict, paths: np.ndarray) -> float:
    """Run the production detectors (CusumArray, two-sided, restart after each alarm) over fresh in-control
    paths (references, paths, days, detectors); each reference's thresholds on its own paths. Returns the
    geometric mean over references of days observed / alarms of the model (any of its detectors)."""
    n_ref, n_paths, n_days, _ = paths.shape
    arrays = [CusumArray(np.repeat([t[name] for t in thresholds], n_paths, axis=0), drifts[name], True)
              for name in drifts]
    flat = paths.reshape(n_ref * n_paths, n_days, -1)
    alarms = np.zeros(len(flat))
    for t in range(n_days):
        hit = np.zeros(len(flat), bool)
        for j, array in enumerate(arrays):
            hit |= array.update(flat[:, t, j]).drift_detected
        alarms += hit
    per_reference = n_paths * n_days / np.maximum(alarms.reshape(n_ref, n_paths).sum(axis=1), 1)
    return float(np.exp(np.mean(np.log(per_reference))))


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], phi: float) -> np.ndarray:
    noise = rng.normal(size=shape)
    out = np.empty(shape)
    out[..., 0] = noise[..., 0] / np.sqrt(1 - phi**2)
    for t in range(1, shape[-1]):
        out[..., t] = phi * out[..., t - 1] + noise[..., t]
    return out * np.sqrt(1 - phi**2)  # unit variance


# A 1000-day reference is a finite sample: the ARL its thresholds deliver varies from one reference to the
# next (about 0.6x to 1.6x of the target for i.i.d. normal noise), so the checks average over references.
N_REFERENCES = 8


def test_calibration_hits_its_arl_on_iid_normal_noise():
    rng = np.random.default_rng(10)
    results = [calibrate({"x": Stream(rng.normal(size=1000), (0.5,), True)}, arl_days=250, seed=i).thresholds
               for i in range(N_REFERENCES)]
    analytic = [siegmund_arl(r["x"][0], 0.5) for r in results]  # Siegmund's approximation as a cross-check
    assert 250 / 1.5 < np.exp(np.mean(np.log(analytic))) < 250 * 1.5
    fresh = rng.normal(size=(N_REFERENCES, 100, 1500, 1))
    assert 250 / 1.5 < _empirical_arl(results, {"x": (0.5,)}, fresh) < 250 * 1.5


def test_calibration_hits_its_arl_on_ar1_noise_for_a_bank_of_detectors():
    rng = np.random.default_rng(11)
    drifts = {"a": (0.25, 0.5, 1.0), "b": (0.5,)}
    results = []
    for i in range(N_REFERENCES):
        reference = _ar1(rng, (2, 1000), 0.5).T  # two autocorrelated streams of one model
        streams = {name: Stream(reference[:, j], drifts[name], True, "model") for j, name in enumerate(drifts)}
        result = calibrate(streams, arl_days=250, seed=i)
        assert result.component_arl > 250  # the model's budget is shared by its four components
        results.append(result.thresholds)
    fresh = np.moveaxis(_ar1(rng, (2, N_REFERENCES, 100, 1500), 0.5), 0, -1)
    assert 250 / 1.5 < _empirical_arl(results, drifts, fresh) < 250 * 1.5
