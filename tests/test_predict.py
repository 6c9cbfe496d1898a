"""Serving: the forecast, its log row, backfilled actuals, live performance vs naive."""
import numpy as np
import pandas as pd
import pytest

from core import predict as serving
from core.registry import RegistryError


def test_demo_replay_filled_the_log(demo_registry):
    log = serving.prediction_log("AAPL")
    assert len(log) >= 120
    done = log.dropna(subset=["actual_close"])
    assert len(done) == len(log) - 1  # only the last day's target is still in the future of the replay
    outside_experiments = log[log["experiment_id"].isna()]
    assert len(outside_experiments) >= 20  # the demo serves AAPL's last 80 replayed days through two A/B tests
    assert (outside_experiments["model_id"] == demo_registry["AAPL"]).all()
    assert (log["latency_ms"] > 0).all()


def test_predict_returns_a_consistent_forecast(demo_registry):
    p = serving.predict("MSFT", "2012-06-01", log_prediction=False)
    assert p.as_of == "2012-06-01" and p.target_date == "2012-06-04"
    assert p.lower < p.predicted_close < p.upper
    assert p.predicted_close == pytest.approx(p.last_close * np.exp(p.predicted_return))
    assert p.model_id == demo_registry["MSFT"]


def test_non_trading_day_uses_the_last_close_before_it(demo_registry):
    p = serving.predict("MSFT", "2012-06-03", log_prediction=False)  # a Sunday
    assert p.as_of == "2012-06-01"


def test_logged_prediction_and_backfill(registry_copy):
    before = len(serving.prediction_log("MSFT"))
    p = serving.predict("MSFT", "2012-10-01", request_key="test-backfill")  # after the replayed days: not logged yet
    log = serving.prediction_log("MSFT")
    assert len(log) == before + 1
    row = log.loc[log["id"] == p.prediction_id].iloc[0]
    assert pd.isna(row["actual_close"]) and row["request_key"] == "test-backfill"
    assert p.logged_at == row["created_at"]
    filled = serving.backfill_actuals("2012-10-02", symbol="MSFT")
    assert filled >= 1
    row = serving.prediction_log("MSFT").set_index("id").loc[p.prediction_id]
    from core.market import load_prices

    assert row["actual_close"] == pytest.approx(load_prices("MSFT").loc["2012-10-02", "close"])


def test_a_request_is_logged_once(registry_copy):
    first = serving.predict("MSFT", "2012-10-01")
    again = serving.predict("MSFT", "2012-10-01", request_key="another key, same request")
    assert again.prediction_id == first.prediction_id and again.predicted_close == first.predicted_close
    assert again.logged_at == first.logged_at
    assert len(serving.prediction_log("MSFT", start="2012-10-01", end="2012-10-01", served_only=False)) == 1
    assert serving.logged_forecast("MSFT", "2012-10-01").prediction_id == first.prediction_id
    assert serving.logged_forecast("MSFT", "2012-10-02") is None


def test_in_training_window_is_refused_when_logging(demo_registry):
    with pytest.raises(serving.InSampleForecastError, match="first day it can serve is 2012-02-28"):
        serving.predict("MSFT", "2011-03-01")
    what_if = serving.predict("MSFT", "2011-03-01", log_prediction=False)  # a what-if is allowed, and not logged
    assert what_if.prediction_id is None and what_if.logged_at is None
    assert serving.logged_forecast("MSFT", "2011-03-01") is None


def test_live_performance_matches_the_log(demo_registry):
    live = serving.live_performance("AAPL", days=30)
    log = serving.prediction_log("AAPL").dropna(subset=["actual_close"])
    last30 = log[log["as_of"].isin(sorted(log["as_of"].unique())[-30:])]
    assert live["n"] == 30
    assert live["mae"] == pytest.approx((last30["predicted_close"] - last30["actual_close"]).abs().mean())
    assert live["naive_mae"] == pytest.approx((last30["last_close"] - last30["actual_close"]).abs().mean())
    assert live["skill"] == pytest.approx(1 - live["mae"] / live["naive_mae"])


def test_no_deployed_model_is_a_clear_error(demo_registry):
    with pytest.raises(RegistryError, match="No model is deployed for IBM"):
        serving.predict("IBM", "2012-01-03", log_prediction=False)


def test_live_performance_never_uses_an_actual_after_as_of(demo_registry):
    log = serving.prediction_log("AAPL").dropna(subset=["actual_close"])
    as_of = log["as_of"].iloc[-10]
    live = serving.live_performance("AAPL", as_of=as_of, days=5)
    assert live["end"] < as_of  # the forecast made on as_of is judged on the next day's close: unknown yet
