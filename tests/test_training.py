"""Training: metrics against hand computation, walk-forward order, conformal coverage, clear errors."""
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import TimeSeriesSplit

from core.market import MarketDataError
from core.training import (conformal_quantile, make_estimator, naive_metrics, price_metrics, skill, train_model,
                           validation_metrics)


def test_price_metrics_by_hand():
    last = np.array([100.0, 100.0, 100.0, 100.0])
    actual = np.array([101.0, 99.0, 102.0, 100.0])
    predicted = np.array([102.0, 98.0, 99.0, 100.5])
    m = price_metrics(last, actual, predicted)
    assert m["mae"] == pytest.approx((1 + 1 + 3 + 0.5) / 4)
    assert m["rmse"] == pytest.approx(np.sqrt((1 + 1 + 9 + 0.25) / 4))
    assert m["mape"] == pytest.approx(np.mean([1 / 101, 1 / 99, 3 / 102, 0.5 / 100]) * 100)
    # directions: up/up hit, down/down hit, down vs up miss, up vs flat miss
    assert m["directional_accuracy"] == pytest.approx(50.0)
    naive = naive_metrics(last, actual)
    assert naive["mae"] == pytest.approx((1 + 1 + 2 + 0) / 4)
    assert naive["directional_accuracy"] == pytest.approx(50.0)  # share of up days: 2 of 4
    assert skill(m["mae"], naive["mae"]) == pytest.approx(1 - 1.375 / 1.0)


def test_price_metrics_rejects_mismatched_input():
    with pytest.raises(ValueError, match="equally long"):
        price_metrics([1.0], [1.0, 2.0], [1.0])


def test_conformal_quantile_rank():
    scores = np.arange(1, 20, dtype=float)  # n = 19: ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(scores, 0.9) == 18.0
    assert conformal_quantile(np.array([5.0]), 0.9) == 5.0


def test_split_conformal_covers_nominally_on_synthetic_data():
    """Exchangeable residuals: coverage on fresh data averages >= the nominal 90%."""
    rng = np.random.default_rng(7)
    hits = []
    for _ in range(400):
        calibration = rng.standard_t(4, 200)
        fresh = rng.standard_t(4, 200)
        q = conformal_quantile(np.abs(calibration), 0.9)
        hits.append(np.mean(np.abs(fresh) <= q))
    assert 0.895 <= np.mean(hits) <= 0.92


def test_validation_metrics_coverage_and_skill():
    rng = np.random.default_rng(3)
    n = 600
    actual = rng.normal(0, 0.01, n)
    pred = actual * 0.5 + rng.normal(0, 0.005, n)  # a model with real signal
    last = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    v = pd.DataFrame({"fold": np.repeat(np.arange(5), n // 5), "pred_return": pred, "actual_return": actual,
                      "last_close": last}, index=pd.bdate_range("2020-01-01", periods=n))
    v["actual_close"] = last * np.exp(actual)
    v["predicted_close"] = last * np.exp(pred)
    m = validation_metrics(v, 0.9)
    assert 0.2 < m["skill"] < 0.4 and m["directional_accuracy"] > 70
    assert 0.8 <= m["interval_coverage_empirical"] <= 1.0
    assert len(m["fold_skill"]) == 5


def test_time_series_split_never_trains_on_the_future():
    for train_idx, test_idx in TimeSeriesSplit(n_splits=5).split(np.zeros((600, 1))):
        assert train_idx.max() < test_idx.min()


def test_train_model_walk_forward(demo_registry):
    trained = train_model("MSFT", "xgb", train_end="2010-06-30", window_days=500, params={"n_estimators": 50})
    assert trained.train_end == pd.Timestamp("2010-06-30")
    assert trained.validation.index.max() < pd.Timestamp("2010-06-30")  # target of the last row is known by then
    assert trained.validation.index.is_monotonic_increasing
    m = trained.metrics
    assert m["naive"]["mae"] > 0 and np.isfinite(m["skill"])
    assert m["skill"] == pytest.approx(1 - m["mae"] / m["naive"]["mae"])
    assert 0.6 <= m["interval_coverage_empirical"] <= 1.0


def test_naive_model_has_zero_skill(demo_registry):
    trained = train_model("MSFT", "naive", train_end="2010-06-30", window_days=400)
    assert trained.metrics["skill"] == 0.0
    assert trained.metrics["mae"] == trained.metrics["naive"]["mae"]


def test_not_enough_history_is_a_clear_error(demo_registry):
    with pytest.raises(MarketDataError, match="Not enough history to train on FB: 145 usable trading days"):
        train_model("FB", "rf")


def test_bad_model_type_and_params():
    with pytest.raises(ValueError, match="model_type must be one of naive, rf, xgb"):
        make_estimator("lstm")
    with pytest.raises(TypeError):
        make_estimator("rf", {"no_such_param": 1})


def test_train_end_is_the_last_trading_day_seen(demo_registry):
    trained = train_model("MSFT", "naive", train_end="2010-07-04", window_days=400)  # a Sunday
    assert trained.train_end == pd.Timestamp("2010-07-02")
    assert trained.validation.index.max() < trained.train_end


def test_xgboost_fits_on_one_thread_and_the_forest_on_the_setting(monkeypatch):
    """XGBoost's OpenMP threads spin on a shared 2-core machine (bench/threads_bench.py): one thread unless asked;
    the random forest's joblib threads follow MLSA_TRAIN_THREADS."""
    from core.training import XGB_THREADS, make_estimator

    monkeypatch.setenv("MLSA_TRAIN_THREADS", "2")
    assert XGB_THREADS == 1 and make_estimator("xgb").get_params()["n_jobs"] == 1
    assert make_estimator("rf").get_params()["n_jobs"] == 2
    assert make_estimator("xgb", n_jobs=2).get_params()["n_jobs"] == 2  # an explicit request is kept
