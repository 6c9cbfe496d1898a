"""Drift statistics against scipy and hand computations, edge cases, the dataset rule under a null,
and a stored, reloaded report on the demo registry."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from core import drift, drift_kernels, drift_report, drift_stats
from core.config import get_settings


def test_psi_identical_samples_is_zero():
    sample = np.random.default_rng(0).normal(size=500)
    assert drift_kernels.psi(sample, sample) == pytest.approx(0.0, abs=1e-12)


def test_psi_known_shift_matches_hand_computation():
    reference = np.arange(100.0)  # deciles at 9.9, 19.8, ...: ten bins of 10 values each
    current = np.arange(50.0, 150.0)  # half of it lands in the top bin, the rest in bins 6-10
    expected = np.full(10, 0.1)
    actual = np.array([1e-4] * 5 + [0.1] * 4 + [0.6])
    hand = float(np.sum((actual - expected) * np.log(actual / expected)))
    assert drift_kernels.psi(reference, current) == pytest.approx(hand, rel=1e-9)


def test_psi_matches_np_histogram_per_column():
    rng = np.random.default_rng(1)
    reference, current = rng.normal(size=2000), rng.normal(0.3, 1.4, size=300)
    edges = np.concatenate([[-np.inf], np.quantile(reference, np.arange(1, 10) / 10), [np.inf]])
    e = np.maximum(np.histogram(reference, edges)[0] / len(reference), drift_kernels.PSI_EPSILON)
    a = np.maximum(np.histogram(current, edges)[0] / len(current), drift_kernels.PSI_EPSILON)
    assert drift_kernels.psi(reference, current) == pytest.approx(np.sum((a - e) * np.log(a / e)), rel=1e-12)


@pytest.mark.parametrize("n, m", [(1000, 30), (60, 60), (12000, 11000)])
def test_vectorised_ks_and_wasserstein_match_scipy(n, m):
    rng = np.random.default_rng(n)
    ref = rng.normal(size=(3, n))
    cur = rng.normal(0.2, 1.3, size=(3, m))
    ref[1], cur[1] = np.round(ref[1]), np.round(cur[1])  # heavy ties
    table = drift_kernels.column_stats(ref, cur)
    for j in range(3):
        expected = stats.ks_2samp(ref[j], cur[j])
        assert table["ks_stat"][j] == pytest.approx(expected.statistic, abs=1e-12)
        if max(n, m) <= drift_kernels.EXACT_KS_MAX_N:  # scipy's exact p-value, the same number
            assert table["p_value"][j] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
        else:  # Kolmogorov's limit with Stephens' correction: documented to be within 2e-3
            assert table["p_value"][j] == pytest.approx(expected.pvalue, abs=2e-3)
        w = stats.wasserstein_distance(ref[j], cur[j]) / np.std(ref[j])
        assert table["wasserstein"][j] == pytest.approx(w, rel=1e-9)


def test_ks_test_is_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=200), rng.normal(0.5, size=80)
    expected = stats.ks_2samp(a, b)
    assert drift_kernels.ks_test(a, b) == pytest.approx((expected.statistic, expected.pvalue))


def test_wasserstein_normalised_by_reference_std():
    assert drift_kernels.wasserstein([0.0, 1, 2, 3, 4], [1.0, 2, 3, 4, 5]) == pytest.approx(1 / np.sqrt(2))


def test_constant_column_is_documented_not_a_crash():
    constant = np.ones(50)
    assert drift_kernels.psi(constant, constant) == pytest.approx(0.0)
    assert drift_kernels.psi(constant, constant + 1) == pytest.approx(drift_kernels.psi(constant, constant - 1))
    assert drift_kernels.psi(constant, constant + 1) > 4  # all of current moved to an outer bin
    table = drift_kernels.column_stats(constant[None, :], (constant + 1)[None, :])
    assert table["wasserstein"][0] == pytest.approx(1.0)  # reference std is 0: the raw distance


def test_nan_and_inf_are_missing_values():
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(size=300), "y": rng.normal(size=300)})
    current = pd.DataFrame({"x": rng.normal(size=100), "y": rng.normal(size=100)})
    current.loc[:39, "y"] = np.nan
    current.loc[40:44, "y"] = np.inf
    result = drift_stats.compare_frames(reference, current)
    row = result.features.set_index("feature").loc["y"]
    assert row["missing_cur"] == pytest.approx(0.45)
    finite = current["y"][np.isfinite(current["y"])]
    assert row["ks_stat"] == pytest.approx(stats.ks_2samp(reference["y"], finite).statistic)
    assert row["verdict"] == "drift"  # 45 points more missing values is a data-quality drift


def test_tiny_and_malformed_inputs_raise_clear_errors():
    with pytest.raises(drift_kernels.DriftInputError, match="at least 5"):
        drift_kernels.psi([1.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    with pytest.raises(drift_kernels.DriftInputError, match="lacks the column"):
        drift_stats.compare_frames(pd.DataFrame({"a": range(10)}), pd.DataFrame({"b": range(10)}))
    with pytest.raises(drift_kernels.DriftInputError, match="row"):
        drift_stats.compare_frames(pd.DataFrame({"a": range(10)}), pd.DataFrame({"a": range(3)}))
    with pytest.raises(drift_kernels.DriftInputError):
        drift_kernels.column_stats(np.ones((1, 10)), np.ones((1, 10)), bins=1)


def test_column_with_too_few_finite_values_is_insufficient():
    reference = pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0)})
    current = pd.DataFrame({"a": np.arange(10.0), "b": [1.0, 2.0] + [np.nan] * 8})
    table = drift_stats.compare_frames(reference, current).features.set_index("feature")
    assert np.isnan(table.loc["b", "psi"])
    assert table.loc["b", "verdict"] == "drift"  # 80% missing vs 0%: still flagged, for that reason


def test_new_category_is_drift():
    reference = pd.DataFrame({"sector": pd.Categorical(["tech", "energy"] * 20), "x": np.arange(40.0)})
    current = pd.DataFrame({"sector": pd.Categorical(["tech", "crypto"] * 10), "x": np.arange(20.0)})
    row = drift_stats.compare_frames(reference, current).features.set_index("feature").loc["sector"]
    assert row["new_categories"] == ["crypto"]
    assert row["verdict"] == "drift"


def test_a_column_constant_in_both_windows_is_no_drift():
    """An index's volume is 0 every day: constant in training and now is "no drift / constant", not
    "100% far out of range" (which it was, since the widened range of a constant is a single point)."""
    rng = np.random.default_rng(11)
    reference = pd.DataFrame({"volume": np.zeros(300), "x": rng.normal(size=300)})
    current = pd.DataFrame({"volume": np.zeros(30), "x": rng.normal(size=30)})
    result = drift_stats.compare_frames(reference, current, serial=True)
    row = result.features.set_index("feature").loc["volume"]
    assert row["verdict"] == "none" and row["out_of_range"] == 0 and row["psi"] == pytest.approx(0.0)
    assert row["note"] == "constant in both windows (0): no drift"
    assert not result.dataset_drift


def test_a_constant_reference_that_changes_is_drift_with_its_reason():
    rng = np.random.default_rng(12)
    reference = pd.DataFrame({"volume": np.zeros(300), "x": rng.normal(size=300)})
    current = pd.DataFrame({"volume": np.r_[np.zeros(20), np.full(10, 5e6)], "x": rng.normal(size=30)})
    row = drift_stats.compare_frames(reference, current).features.set_index("feature").loc["volume"]
    assert row["verdict"] == "drift"
    assert row["note"] == "constant at 0 in the reference; 33% of current values differ"
    comparison = drift_stats.compare_frames(reference, current)
    reasons = drift_report.report_reasons(comparison, {"degraded": False}, {"volatility_drift": False, "bias_drift": False},
                             {"drift": False}, {"in_window": False}, get_settings())
    assert "volume: constant at 0 in the reference; 33% of current values differ" in reasons
    assert not any("far outside" in r for r in reasons)


@pytest.mark.parametrize("reference, current, expected", [
    (pd.DataFrame([[1.0, 2.0]] * 10, columns=["a", "a"]), pd.DataFrame({"a": range(10)}), r"duplicate column name\(s\) 'a'"),
    (pd.DataFrame({"a": ["1.5"] * 10}), pd.DataFrame({"a": ["2.5"] * 10}), r"column 'a' holds text.*pd.to_numeric"),
    (pd.DataFrame({"a": np.arange(10.0)}), pd.DataFrame({"a": ["x"] * 10}), r"column 'a' holds text"),
    (pd.DataFrame({"a": pd.Categorical(["x"] * 10)}), pd.DataFrame({"a": np.arange(10.0)}),
     r"column 'a' is categorical in reference but numeric in current"),
    (pd.DataFrame({"a": [np.nan] * 10, "b": np.arange(10.0)}), pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0)}),
     r"column 'a' has no finite value in the reference \(all missing or infinite\)"),
    (pd.DataFrame({"a": [np.nan] * 10}), pd.DataFrame({"a": [np.nan] * 10}), r"column 'a' has no finite value"),
    (pd.DataFrame(), pd.DataFrame({"a": range(10)}), "reference has no columns"),
    (pd.DataFrame({"a": []}), pd.DataFrame({"a": range(10)}), r"reference has 0 row\(s\)"),
])
def test_degenerate_inputs_raise_a_drift_input_error_naming_the_column(reference, current, expected):
    with pytest.raises(drift_kernels.DriftInputError, match=expected):
        drift_stats.compare_frames(reference, current)


def test_a_column_all_missing_in_the_current_window_only_is_a_data_quality_drift():
    reference = pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0)})
    current = pd.DataFrame({"a": np.arange(10.0), "b": [np.nan] * 10})
    row = drift_stats.compare_frames(reference, current).features.set_index("feature").loc["b"]
    assert row["verdict"] == "drift" and row["missing_cur"] == 1.0


def test_dataset_rule_controls_false_alarms_under_the_null():
    """400 no-drift pairs of 20 independent features: the dataset verdict must fire in <= 5% of them,
    although "any KS p < 0.05" fires in ~64%."""
    rng = np.random.default_rng(4)
    alarms, naive_alarms = 0, 0
    for _ in range(400):
        reference = pd.DataFrame(rng.normal(size=(1000, 20)))
        current = pd.DataFrame(rng.normal(size=(30, 20)))
        result = drift_stats.compare_frames(reference, current)
        alarms += result.dataset_drift
        naive_alarms += bool((result.features["p_value"] < 0.05).any())
    assert alarms / 400 <= 0.05
    assert naive_alarms / 400 > 0.4  # the rule it replaces would have fired constantly


def test_dataset_rule_fires_on_a_real_shift():
    rng = np.random.default_rng(5)
    reference = pd.DataFrame(rng.normal(size=(1000, 20)))
    current = pd.DataFrame(rng.normal(size=(30, 20)))
    current.iloc[:, :10] += 2.0
    result = drift_stats.compare_frames(reference, current)
    assert result.dataset_drift and result.n_drifted >= 10


def test_check_model_report_is_stored_and_reloaded(demo_registry, registry_copy):
    model_id = demo_registry["AAPL"]
    before = len(drift.drift_history(model_id))
    report = drift.check_model(model_id, window_days=30)
    assert report.severity in drift_report.SEVERITIES
    assert list(report.features.columns[:6]) == ["feature", "psi", "ks_stat", "p_value", "wasserstein", "verdict"]
    assert len(report.features) == 20
    for key in ("recent_mae", "validation_mae", "change_pct", "degraded"):
        assert key in report.performance
    from core.predict import prediction_log

    logged = prediction_log(model_id=model_id, start=report.dataset["current_start"], end=report.as_of, served_only=False)
    with_actuals = logged.dropna(subset=["actual_close"])
    assert report.performance["n"] == int((with_actuals["target_date"] <= report.as_of).sum()) > 0
    history = drift.drift_history(model_id)
    assert len(history) == before + 1
    stored = drift.latest_check(model_id)
    assert stored["as_of"] == report.as_of and stored["severity"] == report.severity
    reloaded = drift_report.DriftReport.from_dict(json.loads(json.dumps(stored)))
    assert reloaded.reasons == report.reasons
    pd.testing.assert_frame_equal(reloaded.features[["feature", "psi", "p_value"]].reset_index(drop=True),
                                  report.features[["feature", "psi", "p_value"]].reset_index(drop=True))
    assert drift.psi_history(model_id).shape[1] == 20
    retrain, reason = drift_report.should_retrain(report)
    assert isinstance(retrain, bool) and reason


def test_check_model_without_store_writes_nothing(demo_registry):
    model_id = demo_registry["MSFT"]
    before = len(drift.drift_history(model_id))
    drift.check_model(model_id, store=False)
    assert len(drift.drift_history(model_id)) == before


def test_check_model_inside_training_window_is_a_clear_error(demo_registry):
    from core.registry import get_model

    model = get_model(demo_registry["AAPL"])
    with pytest.raises(drift_kernels.DriftInputError, match="after its training window"):
        drift.check_model(model["model_id"], as_of=model["train_end"], store=False)


def _report(**overrides) -> drift_report.DriftReport:
    base = dict(model_id="m", as_of="2020-01-02", window_days=30, overall_drift=False, severity="none", reasons=[],
                features=pd.DataFrame(columns=drift_report.FEATURE_TABLE_COLUMNS),
                performance={"degraded": False, "change_pct": 5.0}, concept={}, prediction={}, streaming={},
                dataset={"dataset_drift": False})
    return drift_report.DriftReport(**{**base, **overrides})


def test_should_retrain_rules():
    assert drift_report.should_retrain(_report()) == (False, "no drift detected")
    yes, why = drift_report.should_retrain(_report(performance={"degraded": True, "change_pct": 40.0}, reasons=["MAE +40%"]))
    assert yes and "MAE +40%" in why
    assert drift_report.should_retrain(_report(dataset={"dataset_drift": True}, reasons=["12 of 20"]))[0]
    no, why = drift_report.should_retrain(_report(dataset={"dataset_drift": True}, performance={"degraded": False, "change_pct": -10.0}))
    assert not no and "monitor" in why


def test_thresholds_come_from_settings(monkeypatch):
    rng = np.random.default_rng(6)
    reference = pd.DataFrame(rng.normal(size=(1000, 4)))
    current = pd.DataFrame(rng.normal(0.8, 1.0, size=(40, 4)))
    assert drift_stats.compare_frames(reference, current).dataset_drift
    monkeypatch.setenv("MLSA_DRIFT_PSI_THRESHOLD", "50")
    assert get_settings().drift_psi_threshold == 50
    assert not drift_stats.compare_frames(reference, current).dataset_drift


def test_value_far_outside_the_training_range_is_drift():
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"x": rng.normal(size=500), "y": rng.normal(size=500)})
    current = pd.DataFrame({"x": rng.normal(size=30), "y": rng.normal(size=30)})
    current.loc[29, "x"] = 100.0  # a units bug on the last day
    table = drift_stats.compare_frames(reference, current).features.set_index("feature")
    assert table.loc["x", "out_of_range"] == pytest.approx(1 / 30)
    assert table.loc["x", "verdict"] == "drift" and table.loc["y", "out_of_range"] == 0


def test_serial_null_discounts_autocorrelated_features():
    """A random walk's 30-day stretch always looks "shifted" to PSI and KS; against the reference's own
    30-day stretches it is ordinary, while the same stretch moved far away is not."""
    rng = np.random.default_rng(8)
    walk = np.cumsum(rng.normal(size=1030)) * 0.1
    reference, current = pd.DataFrame({"w": walk[:1000]}), pd.DataFrame({"w": walk[1000:]})
    iid = drift_stats.compare_frames(reference, current).features.iloc[0]
    serial = drift_stats.compare_frames(reference, current, serial=True).features.iloc[0]
    assert serial["psi_p_value"] > 0.05 and serial["verdict"] != "drift"
    assert iid["p_value"] < 0.05  # the iid view calls it a shift
    moved = pd.DataFrame({"w": walk[1000:] + 3 * (walk.max() - walk.min())})
    assert drift_stats.compare_frames(reference, moved, serial=True).features.iloc[0]["verdict"] == "drift"


def test_check_model_refuses_a_day_beyond_the_data_and_stores_nothing(demo_registry, registry_copy):
    from core.market import last_trading_day
    from core.registry import get_model

    model_id = demo_registry["AAPL"]
    last = last_trading_day("AAPL")
    before = len(drift.drift_history(model_id))
    with pytest.raises(drift.BeyondDataError, match=f"last trading day in the data for AAPL: {last:%Y-%m-%d}"):
        drift.check_model(model_id, as_of="2030-01-01")
    report = drift.check_model(model_id, as_of=last, store=False)
    report.as_of = "2030-01-01"  # a report forged for a day with no data is refused at storage too
    with pytest.raises(drift.BeyondDataError, match=f"{last:%Y-%m-%d}"):
        drift.store_report(report)
    assert len(drift.drift_history(model_id)) == before
    first, end = drift.as_of_bounds(model_id, 30)
    assert end == last and pd.Timestamp(get_model(model_id)["train_end"]) < first < end
    assert drift.check_model(model_id, as_of=first, window_days=30, store=False).dataset["current_start"] > get_model(model_id)["train_end"]


def test_streaming_check_runs_on_the_whole_stream_and_keeps_only_what_the_page_draws():
    """ADWIN / Page-Hinkley see every day since deployment (a jump late in a long stream is found as on the whole
    stream), but the report keeps the last STREAM_KEEP_DAYS days and their detections: a report's size no longer
    grows with the days since deployment."""
    from river.drift import PageHinkley

    rng = np.random.default_rng(3)
    days = [f"{d:%Y-%m-%d}" for d in pd.bdate_range("2020-01-01", periods=400)]
    value = np.abs(rng.normal(0, 0.01, 400)) + np.where(np.arange(400) >= 360, 0.05, 0.0)
    errors = pd.DataFrame({"as_of": days, "error": value})
    validation = pd.DataFrame({"pred_return": np.zeros(200), "actual_return": np.full(200, 0.008)})
    result = drift_report.streaming_check(errors, validation, window_start=days[-30])
    keep = drift_report.STREAM_KEEP_DAYS
    assert result["n"] == 400 and result["stream"]["date"] == days[-keep:] and len(result["stream"]["value"]) == keep
    np.testing.assert_allclose(result["stream"]["value"], np.round(value[-keep:] / 0.008, 4))
    detector, whole = PageHinkley(mode="up"), []
    for day, v in zip(days, value / 0.008):
        detector.update(v)
        if detector.drift_detected:
            whole.append(day)
    assert result["page_hinkley"] == [d for d in whole if d >= days[-keep]] and result["in_window"]
    assert result["n_detections"] >= len(result["adwin"]) + len(result["page_hinkley"])
    assert len(json.dumps(result)) < 5_000


def _trending_features(seed: int, volatility_after: float = 1.0):
    """Features of a price that trends up strongly (+0.2% a day: x4 to x6 over 1,100 days), calm throughout, or
    with its volatility x`volatility_after` in the last 30 days."""
    from core.features import FEATURE_COLUMNS, build_features

    rng = np.random.default_rng(seed)
    n = 1100
    returns = rng.normal(0.002, 0.012, n)
    returns[-30:] = 0.002 + volatility_after * (returns[-30:] - 0.002)
    close = 20 * np.exp(np.cumsum(returns))
    prices = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "adj_close": close,
                           "volume": rng.integers(1_000_000, 2_000_000, n).astype(float)},
                          index=pd.bdate_range("2010-01-01", periods=n))
    features = build_features(prices, "TREND")[FEATURE_COLUMNS]
    return close, features.iloc[:-30], features.iloc[-30:]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_trending_but_calm_series_is_not_drift_and_a_volatility_change_is(seed):
    """The model's features are scale-free (returns, ratios to moving averages, MACD / price, z-scores), so a
    price that grew x4-x6 over the training window is no drift in a calm month, although its PSIs are large (a
    30-day window of slow features covers a few of the reference's deciles); the same month with volatility x3
    is drift, on the volatility features."""
    budget = drift_stats.check_budget()
    close, reference, current = _trending_features(seed)
    assert close[-1] / close[0] > 3
    calm = drift_stats.compare_frames(reference, current, serial=True, alpha=budget.window)
    assert not calm.dataset_drift and calm.n_drifted == 0 and calm.features["psi"].max() > 1
    _, reference, current = _trending_features(seed, volatility_after=3.0)
    changed = drift_stats.compare_frames(reference, current, serial=True, alpha=budget.window)
    drifted = set(changed.features.loc[changed.features["verdict"] == "drift", "feature"])
    assert changed.dataset_drift and {"volatility_5", "volatility_10", "volatility_20"} <= drifted


def test_one_false_alarm_budget_is_split_between_the_window_test_and_the_sequential_alarms(monkeypatch):
    """drift_ks_alpha is the budget of a whole check: the sequential alarms are charged ARL_TOLERANCE x HOLD_DAYS
    / ARL (an alarm current in the last HOLD_DAYS days, at up to 1.5x the calibrated rate), the window test
    the rest, never less than MIN_WINDOW_SHARE of it."""
    from core.config import get_settings

    budget = drift_stats.check_budget()
    assert budget.total == 0.05 and budget.sequential == pytest.approx(1.5 * 5 / 250)
    assert budget.window == pytest.approx(0.02) and budget.window + budget.sequential == pytest.approx(budget.total)
    assert "window test 2.0%" in budget.describe() and "3.0%" in budget.describe()
    monkeypatch.setenv("MLSA_DRIFT_ARL_DAYS", "50")  # 15% for the alarms alone: the window keeps its floor
    small = drift_stats.check_budget(get_settings())
    assert small.sequential == pytest.approx(0.15) and small.window == pytest.approx(drift_stats.MIN_WINDOW_SHARE * 0.05)


def test_the_rule_runs_at_the_alpha_it_is_given():
    """Twenty features shifted by 0.6 sd: one has a KS p-value between share / 20 and 0.05 / 20 (share: the window
    test's part of the budget, 0.02), so it drifts at the whole budget and not at the window test's share; the
    verdicts, the rule's text and the corrected alpha follow the alpha given."""
    share = drift_stats.check_budget().window
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(rng.normal(size=(2000, 20)))
    current = pd.DataFrame(rng.normal(size=(30, 20))) + 0.6
    at_05 = drift_stats.compare_frames(reference, current, alpha=0.05)
    at_share = drift_stats.compare_frames(reference, current, alpha=share)
    assert at_05.n_drifted == at_share.n_drifted + 1
    between = (at_05.features["verdict"] == "drift") & (at_share.features["verdict"] != "drift")
    assert share / 20 <= float(at_05.features.loc[between, "p_value"].iloc[0]) < 0.05 / 20
    assert at_05.alpha_corrected == pytest.approx(0.05 / 20) and at_share.alpha_corrected == pytest.approx(share / 20)
    assert f"({share:g} / 20)" in at_share.rule
    expected = drift_stats.distribution_drift(at_share.features["psi"].to_numpy(),
                                              at_share.features["p_value"].to_numpy(), np.full(20, np.nan), 20, 0.25,
                                              share)
    np.testing.assert_array_equal(at_share.features["verdict"].to_numpy() == "drift", expected)


def test_migration_trims_the_error_stream_of_reports_stored_whole(demo_registry, registry_copy):
    """A report stored before the stream was trimmed (400 days of stream) is rewritten with the last 90 days and
    the detections among them; everything else in it, and shorter reports, are untouched; the page's reader
    still loads it."""
    from core import store
    from core.schema import MIGRATIONS, _m008_drift_report_streams

    db, model_id = registry_copy, demo_registry["AAPL"]
    days = [f"{d:%Y-%m-%d}" for d in pd.bdate_range("2015-01-01", periods=400)]
    report = drift.check_model(model_id, store=False).to_dict()
    report["streaming"] |= {"stream": {"date": days, "value": [1.0] * 400}, "adwin": [days[10], days[350]],
                            "page_hinkley": [days[399]]}
    with db.conn:
        db.conn.execute("INSERT INTO drift_checks (model_id, as_of, window_days, overall_drift, severity, reasons_json, "
                        "report_json, created_at) VALUES (?, ?, 30, 0, 'none', '[]', ?, 'test')",
                        [model_id, report["as_of"], json.dumps(report)])
        big = db.conn.execute("SELECT MAX(id) FROM drift_checks").fetchone()[0]
        others = dict(db.conn.execute("SELECT id, report_json FROM drift_checks WHERE id != ?", [big]).fetchall())
        db.conn.execute(f"PRAGMA user_version = {MIGRATIONS.index(_m008_drift_report_streams)}")  # 008 runs again
    store.close_all()
    db = store.get_db()  # migrates
    assert store.schema_version(db) == len(MIGRATIONS)
    trimmed = json.loads(db.execute("SELECT report_json FROM drift_checks WHERE id = ?", [big]).fetchone()[0])
    assert trimmed["streaming"]["stream"] == {"date": days[-90:], "value": [1.0] * 90}
    assert trimmed["streaming"]["adwin"] == [days[350]] and trimmed["streaming"]["page_hinkley"] == [days[399]]
    assert {k: v for k, v in trimmed.items() if k != "streaming"} == {k: v for k, v in report.items() if k != "streaming"}
    assert dict(db.execute("SELECT id, report_json FROM drift_checks WHERE id != ?", [big]).fetchall()) == others
    assert drift_report.DriftReport.from_dict(trimmed).streaming["n"] == report["streaming"]["n"]
