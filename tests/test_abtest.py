"""A/B tests: routing, the statistics (against scipy and by simulation), storage, serving hook, stop + deploy."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent


# --- routing ----------------------------------------------------------------------------------------------

def test_router_split_within_tolerance_over_100k_keys():
    from core.ab_stats import route_key, srm_pvalue

    shares = [0.2, 0.3, 0.5]
    arms = np.array([route_key(7, f"user-{i}", shares) for i in range(100_000)])
    observed = np.bincount(arms, minlength=3) / len(arms)
    assert np.abs(observed - shares).max() < 0.005  # binomial sd at n=100k is <= 0.0016
    assert srm_pvalue(np.bincount(arms), shares) > 0.001
    # another experiment id reshuffles the keys independently
    other = np.array([route_key(8, f"user-{i}", shares) for i in range(2_000)])
    assert (other != arms[:2_000]).mean() > 0.4


def test_router_is_stable_across_processes():
    from core.ab_stats import route_key

    keys = [f"AAPL:2012-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 29)]
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from core.ab_stats import route_key; "
            "print(','.join(str(route_key(3, f'AAPL:2012-{m:02d}-{d:02d}', [0.5, 0.25, 0.25])) "
            "for m in range(1, 13) for d in range(1, 29)))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "MLSA_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == ",".join(str(route_key(3, k, [0.5, 0.25, 0.25])) for k in keys)


# --- statistics -------------------------------------------------------------------------------------------

def test_welch_and_paired_results_equal_scipy():
    from core.ab_stats import compare_arms, cumulative_by_look, fixed_horizon_pvalues, looks_paired, looks_two_sample

    rng = np.random.default_rng(1)
    a, b = np.abs(rng.normal(0, 1.0, 80)), np.abs(rng.normal(0, 1.3, 55))
    result = compare_arms({"A": a, "B": b}, [0.6, 0.4], 0.95, 30)
    reference = stats.ttest_ind(b, a, equal_var=False)
    ci = reference.confidence_interval(0.95)
    comparison = result.comparisons[0]
    assert comparison.test == "welch"
    assert comparison.p_fixed == pytest.approx(reference.pvalue, rel=1e-12)
    assert (comparison.ci_low, comparison.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert comparison.difference == pytest.approx(b.mean() - a.mean())
    # the vectorised per-look statistic agrees with scipy at the last look
    looks = looks_two_sample(*cumulative_by_look(a, np.arange(80), 80), *cumulative_by_look(b, np.arange(55), 80))
    assert fixed_horizon_pvalues(looks)[-1] == pytest.approx(reference.pvalue, rel=1e-9)

    c = a[:55] * 0.9 + rng.normal(0, 0.05, 55)
    paired = compare_arms({"A": a[:55], "B": c}, [0.5, 0.5], 0.95, 30, paired=True)
    ref_paired = stats.ttest_rel(c, a[:55])
    assert paired.comparisons[0].test == "paired"
    assert paired.comparisons[0].p_fixed == pytest.approx(ref_paired.pvalue, rel=1e-12)
    assert fixed_horizon_pvalues(looks_paired(*cumulative_by_look(c - a[:55], np.arange(55), 55)))[-1] == \
        pytest.approx(ref_paired.pvalue, rel=1e-9)


def _simulated_experiments(n_experiments: int, days: int, challenger_scale: float, seed: int):
    """Daily-look statistics of many 50/50 experiments (one request a day), vectorised over experiments."""
    from core.ab_stats import looks_two_sample

    rng = np.random.default_rng(seed)
    to_b = rng.random((n_experiments, days)) < 0.5
    loss = np.abs(rng.standard_t(4, size=(n_experiments, days))) * np.where(to_b, challenger_scale, 1.0)
    sums = lambda mask: (np.cumsum(mask, 1), np.cumsum(loss * mask, 1), np.cumsum(loss**2 * mask, 1))  # noqa: E731
    return looks_two_sample(*sums(~to_b), *sums(to_b))


def test_false_winner_rate_with_daily_peeking_is_at_most_nominal():
    from core.ab_stats import always_valid_pvalues, fixed_horizon_pvalues

    looks = _simulated_experiments(500, 250, 1.0, seed=11)  # no true difference, heavy-tailed errors
    eligible = np.minimum(looks.n_control, looks.n_challenger) >= 30
    sequential_rate = (always_valid_pvalues(looks, min_samples=30).min(axis=1) <= 0.05).mean()
    naive_rate = ((fixed_horizon_pvalues(looks) <= 0.05) & eligible).any(axis=1).mean()
    assert sequential_rate <= 0.05
    assert naive_rate > 0.10  # what the rule protects against: a daily t-test finds many false winners


def test_paired_false_winner_rate_with_daily_peeking_is_at_most_nominal():
    from core.ab_stats import always_valid_pvalues, looks_paired

    rng = np.random.default_rng(5)
    common = np.abs(rng.standard_t(4, size=(500, 200)))  # shadow mode: both arms see the same day
    d = (common + rng.normal(0, 0.2, common.shape)) - (common + rng.normal(0, 0.2, common.shape))
    looks = looks_paired(np.cumsum(np.ones_like(d), 1), np.cumsum(d, 1), np.cumsum(d**2, 1))
    assert (always_valid_pvalues(looks, min_samples=30)[:, -1] <= 0.05).mean() <= 0.05


def test_a_real_difference_is_found_and_the_better_arm_wins():
    from core.ab_stats import always_valid_pvalues, compare_arms

    looks = _simulated_experiments(200, 250, 0.6, seed=3)  # challenger errs 40% less
    assert (always_valid_pvalues(looks, min_samples=30)[:, -1] <= 0.05).mean() > 0.8

    rng = np.random.default_rng(4)
    control, better = np.abs(rng.normal(0, 1, 300)), np.abs(rng.normal(0, 0.6, 300))
    result = compare_arms({"A": control, "B": better}, [0.5, 0.5], 0.95, 30)
    assert result.winner == "B" and result.significant and result.improvement_pct > 20
    assert result.comparisons[0].cs_high < 0  # the always-valid interval excludes "no difference"
    flipped = compare_arms({"A": better, "B": control}, [0.5, 0.5], 0.95, 30)
    assert flipped.winner == "A"  # the control is kept when the challenger is worse
    three = compare_arms({"A": control, "B": control[::-1].copy(), "C": better}, [0.4, 0.3, 0.3], 0.95, 30)
    assert three.winner == "C" and three.alpha_per_comparison == pytest.approx(0.025)


def test_no_winner_before_min_samples():
    from core.ab_stats import compare_arms

    result = compare_arms({"A": np.full(20, 2.0) + np.arange(20) * 0.01, "B": np.full(20, 0.1) + np.arange(20) * 0.01},
                          [0.5, 0.5], 0.95, min_samples=30)
    assert result.winner is None and not result.enough_samples


def test_srm_fires_on_45_55_sold_as_50_50():
    from core.ab_stats import compare_arms, srm_pvalue

    assert srm_pvalue([4500, 5500], [0.5, 0.5]) < 0.001
    assert srm_pvalue([5030, 4970], [0.5, 0.5]) > 0.001
    rng = np.random.default_rng(2)
    result = compare_arms({"A": rng.random(4500), "B": rng.random(5500)}, [0.5, 0.5], 0.95, 30)
    assert result.srm_flag
    assert not compare_arms({"A": rng.random(4500), "B": rng.random(5500)}, [0.45, 0.55], 0.95, 30).srm_flag


# --- storage, serving hook, stop ----------------------------------------------------------------------------

def _models(symbol: str):
    from core.registry import deployed_model, list_models

    champion = deployed_model(symbol)["model_id"]
    other = next(m["model_id"] for m in list_models(symbol) if m["model_id"] != champion and m["model_type"] != "direction")
    return champion, other


def test_create_experiment_validates(registry_copy):
    from core.abtest import create_experiment, ExperimentError

    champion, other = _models("MSFT")
    aapl = _models("AAPL")[0]
    for arms, symbol, message in (
        ([(champion, 0.5), (other, 0.4)], "MSFT", "sum to 100"),
        ([(champion, 1.0)], "MSFT", "2 to"),
        ([(champion, 0.5), (aapl, 0.5)], "MSFT", "same ticker"),
        ([(champion, 0.5), ("nope_v1", 0.5)], "MSFT", "No model"),
        ([(aapl, 0.5), (aapl, 0.5)], "AAPL", "already has a running experiment"),
    ):
        with pytest.raises(ExperimentError, match=message):
            create_experiment("t", symbol, arms, "2012-06-01")
    create_experiment("unique", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-06-01")
    with pytest.raises(ExperimentError, match="already exists"):
        create_experiment("unique", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-06-01")


def test_serving_path_routes_running_experiment_with_shadows(registry_copy):
    from core.predict import active_route
    from core.abtest import create_experiment, stop
    from core.ab_replay import simulate
    from core.ab_stats import route_key
    from core.market import load_prices

    champion, other = _models("MSFT")
    assert active_route(registry_copy, "MSFT", "MSFT:2012-06-01") is None
    experiment_id = create_experiment("shadow msft", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-09-04",
                                      duration_days=60, shadow=True, min_samples=5)
    days = load_prices("MSFT", start="2012-09-04", end="2012-10-15").index
    assert simulate(experiment_id, days[0], days[-1]) == len(days)
    assert simulate(experiment_id, days[0], days[-1]) == 0  # a second replay logs nothing new, and says so
    rows = list(registry_copy.query("SELECT * FROM predictions WHERE experiment_id = ? ORDER BY id", [experiment_id]))
    assert len(rows) == 2 * len(days)
    served = [r for r in rows if r["served"] == 1]
    assert len(served) == len(days)
    for row in served:
        arm = "AB"[route_key(experiment_id, row["request_key"], [0.5, 0.5])]
        assert row["arm"] == arm and row["model_id"] == {"A": champion, "B": other}[arm]
    assert all(r["arm"] != s["arm"] for r, s in zip(rows[::2], rows[1::2], strict=True))  # each shadow is the other arm
    stop(experiment_id, deploy_winner=False)
    assert active_route(registry_copy, "MSFT", "MSFT:2012-06-01") is None  # stopped tests no longer route


def test_analyze_stop_and_deploy_winner_with_audit(registry_copy):
    from core.abtest import analyze, create_experiment, ExperimentError, record_actual, record_prediction, stop
    from core.registry import CertificationRequired, deployed_model, get_model

    champion, other = _models("MSFT")
    experiment_id = create_experiment("external msft", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-03-01",
                                      duration_days=120, min_samples=30)  # after both arms' training window
    rng = np.random.default_rng(8)
    for day in range(80):  # arm B's outside predictions are much closer to the actual
        model, spread = (champion, 1.0) if day % 2 == 0 else (other, 0.3)
        actual = 30 + rng.normal()
        pid = record_prediction(experiment_id, model, actual + rng.normal(0, spread), as_of=f"2012-{3 + day // 28:02d}-{1 + day % 28:02d}",
                                last_close=30.0)
        record_actual(pid, actual)
    analysis = analyze(experiment_id)
    assert analysis.winner == "B" and analysis.winner_model_id == other
    assert list(analysis.arms["n"]) == [40, 40] and "Deploy arm B" in analysis.recommendation
    assert analysis.arms.loc[1, "MAE $"] < analysis.arms.loc[0, "MAE $"]
    assert "arm_summary" in analysis.results_csv()

    if not get_model(other)["certified"]:  # the registry's certification gate refuses: nothing changes
        with pytest.raises(CertificationRequired):
            stop(experiment_id, actor="test")
        assert analyze(experiment_id).experiment["status"] == "running"
        assert deployed_model("MSFT")["model_id"] == champion
    result = stop(experiment_id, actor="test", override=True)
    assert result["deployed"] == other and deployed_model("MSFT")["model_id"] == other
    row = analyze(experiment_id).experiment
    assert row["status"] == "stopped" and row["winner"] == "B"
    actions = [r["action"] for r in registry_copy.query("SELECT action FROM audit_log WHERE target IN (?, ?) ORDER BY id",
                                                [f"experiment:{experiment_id}", other])]
    assert actions[-2:] == ["deploy", "stop_experiment"] and "create_experiment" in actions
    with pytest.raises(ExperimentError, match="already stopped"):
        stop(experiment_id)


def test_demo_has_a_finished_and_a_running_experiment_without_double_serving(demo_registry):
    from core.abtest import analyze, list_experiments
    from core.store import get_db

    table = list_experiments("AAPL")
    assert sorted(table["status"]) == ["running", "stopped"]
    finished = analyze(int(table.loc[table["status"] == "stopped", "id"].iloc[0]))
    assert finished.comparison.comparisons[0].test == "paired" and finished.comparison.enough_samples
    running = analyze(int(table.loc[table["status"] == "running", "id"].iloc[0]))
    assert running.comparison.comparisons[0].test == "welch" and running.arms["served"].sum() > 0
    doubled = list(get_db().query(
        "SELECT as_of FROM predictions WHERE symbol = 'AAPL' AND served = 1 GROUP BY as_of HAVING COUNT(*) > 1"))
    assert doubled == []


def test_routing_respects_the_test_window_and_a_second_stop_is_refused(registry_copy):
    """A replayed day before the start (or after the planned end) is served by the deployed model."""
    from core.abtest import create_experiment, ExperimentError, stop
    from core.predict import active_route
    from core.predict import predict

    champion, other = _models("MSFT")
    experiment_id = create_experiment("window msft", "MSFT", [(champion, 0.0001), (other, 0.9999)], "2012-09-04",
                                      duration_days=10)
    assert active_route(registry_copy, "MSFT", "k", "2012-09-03") is None
    assert active_route(registry_copy, "MSFT", "k", "2012-09-05").experiment_id == experiment_id
    assert active_route(registry_copy, "MSFT", "k", "2012-09-20") is None
    before, during = predict("MSFT", "2012-08-31", log_prediction=False), predict("MSFT", "2012-09-05", log_prediction=False)
    assert before.experiment_id is None and before.model_id == champion
    assert during.experiment_id == experiment_id
    stop(experiment_id, deploy_winner=False)
    with pytest.raises(ExperimentError, match="already stopped"):
        stop(experiment_id, deploy_winner=False)


def test_external_prediction_is_judged_on_the_next_trading_day(registry_copy):
    from core.abtest import create_experiment, record_prediction

    champion, other = _models("MSFT")
    experiment_id = create_experiment("external day msft", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-09-04")
    pid = record_prediction(experiment_id, champion, 30.0, as_of="2012-09-07")  # a Friday
    target = registry_copy.execute("SELECT target_date FROM predictions WHERE id = ?", [pid]).fetchone()[0]
    assert target == "2012-09-10"


def test_a_direction_test_compares_its_arms_on_log_loss_computed_by_hand(registry_copy):
    """Two direction models of MSFT as arms; each served P(up) is then set to a known value per arm, so the log
    loss of every prediction is -ln(p) on an up day and -ln(1 - p) on a down day, by hand."""
    from core.ab_replay import simulate
    from core.abtest import ExperimentError, analyze, create_experiment
    from core.ab_validation import default_metric
    from core.direction import train_direction
    from core.predict import active_route
    from core.registry import register

    arms = [register(train_direction("MSFT", "logit", train_end="2012-05-31", window_days=300), db=registry_copy),
            register(train_direction("MSFT", "logit", train_end="2012-05-31", window_days=500), db=registry_copy)]
    assert default_metric(arms) == "log_loss"
    with pytest.raises(ExperimentError, match="mix price and direction"):
        create_experiment("mixed", "MSFT", [(arms[0], 0.5), (registry_copy.execute(
            "SELECT model_id FROM models WHERE symbol = 'MSFT' AND status = 'deployed'").fetchone()[0], 0.5)],
            "2012-06-01", metric="log_loss")
    with pytest.raises(ExperimentError, match="judged on log_loss or brier"):
        create_experiment("by mae", "MSFT", [(arms[0], 0.5), (arms[1], 0.5)], "2012-06-01")
    experiment_id = create_experiment("direction", "MSFT", [(arms[0], 0.5), (arms[1], 0.5)], "2012-06-01",
                                      duration_days=60, min_samples=5, metric="log_loss")
    with pytest.raises(ExperimentError, match="already has a running direction experiment"):
        create_experiment("second direction", "MSFT", [(arms[1], 0.5), (arms[0], 0.5)], "2012-06-01", metric="log_loss")
    price = registry_copy.execute("SELECT model_id FROM models WHERE symbol = 'MSFT' AND status = 'deployed' "
                                  "AND model_type != 'direction'").fetchone()[0]
    price_test = create_experiment("price beside it", "MSFT", [(price, 0.5), (price, 0.5)], "2012-06-01")
    routes = {kind: active_route(registry_copy, "MSFT", "MSFT:2012-06-04", "2012-06-04", kind=kind)
              for kind in ("price", "direction")}  # each test routes requests of its own kind only
    assert (routes["price"].experiment_id, routes["direction"].experiment_id) == (price_test, experiment_id)
    logged = simulate(experiment_id, "2012-06-01", "2012-07-30")
    rows = pd.read_sql_query("SELECT id, arm, p_up, predicted_close, last_close, actual_close FROM predictions "
                             "WHERE experiment_id = ? AND served = 1", registry_copy.conn, params=[experiment_id])
    assert len(rows) == logged > 20 and rows["p_up"].between(0, 1).all() and rows["predicted_close"].isna().all()
    assert set(rows["arm"]) == {"A", "B"}
    known = {"A": 0.6, "B": 0.45}
    for arm, p in known.items():
        registry_copy.execute("UPDATE predictions SET p_up = ? WHERE experiment_id = ? AND arm = ?", [p, experiment_id, arm])
    registry_copy.conn.commit()
    analysis = analyze(experiment_id)
    scored = rows.dropna(subset=["actual_close"])
    for arm, p in known.items():
        up = (scored.loc[scored["arm"] == arm, "actual_close"] > scored.loc[scored["arm"] == arm, "last_close"]).to_numpy()
        by_hand = float(np.mean([-math.log(p) if went_up else -math.log(1 - p) for went_up in up]))
        assert analysis.comparison.mean_loss[arm] == pytest.approx(by_hand)
        row = analysis.arms.set_index("arm").loc[arm]
        assert row["log loss"] == pytest.approx(by_hand) and row["n"] == len(up)
        assert row["Brier"] == pytest.approx(float(np.mean([(p - went_up) ** 2 for went_up in up])))
    difference = analysis.comparison.comparisons[0].difference
    assert difference == pytest.approx(analysis.comparison.mean_loss["B"] - analysis.comparison.mean_loss["A"])
