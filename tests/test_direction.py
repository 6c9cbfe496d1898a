"""Direction models: metrics against sklearn / scipy / hand values, no look-ahead in the label, calibration,
walk-forward order, training and registration of a real classifier, its P(up) and interval of belief."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, log_loss, roc_auc_score

from core import direction_stats as ds
from core.features import build_features, direction_labels, today_up, training_rows
from core.market import load_prices


def test_classification_metrics_match_sklearn_and_hand_values():
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    p = np.array([0.9, 0.2, 0.4, 0.6, 0.7, 0.1, 0.55, 0.45])
    m = ds.classification_metrics(y, p)
    predicted = (p >= 0.5).astype(int)  # [1,0,0,1,1,0,1,0]: TP 3, FN 1, FP 1, TN 3
    assert m["confusion"] == [[3, 1], [1, 3]]
    assert m["accuracy"] == pytest.approx(0.75) == accuracy_score(y, predicted)
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(f1_score(y, predicted))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2)) == pytest.approx(brier_score_loss(y, p))
    assert m["log_loss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert m["log_loss"] == pytest.approx(log_loss(y, p))


def test_one_class_auc_is_undefined_not_a_half_and_certain_probabilities_stay_finite():
    m = ds.classification_metrics(np.ones(4, dtype=int), np.array([1.0, 1.0, 0.0, 1.0]))
    assert np.isnan(m["roc_auc"]) and np.isnan(m["balanced_accuracy"])
    assert np.isfinite(m["log_loss"]) and m["log_loss"] > 3  # a confident miss is heavily punished, not infinite


def test_baselines_on_hand_made_folds():
    train_labels = np.array([1, 1, 1, 0])
    assert ds.majority_baseline(train_labels, 3).tolist() == [0.75, 0.75, 0.75]
    # tomorrow repeated today's direction on 3 of 4 training days
    p = ds.persistence_baseline(np.array([1, 0, 1, 0]), np.array([1, 0, 1, 1]), np.array([1, 0]))
    assert p.tolist() == [0.75, 0.25]
    # a market that mean-reverts never turns "same as today" into "opposite of today"
    p = ds.persistence_baseline(np.array([1, 0, 1, 0]), np.array([0, 1, 0, 1]), np.array([1, 0]))
    assert p[0] >= 0.5 > p[1]
    scores = ds.versus_baselines({"brier": 0.24, "accuracy": 0.55},
                                 {"always_up": {"brier": 0.25, "accuracy": 0.53}, "persistence": {"brier": 0.26, "accuracy": 0.54}})
    assert scores["best_baseline"] == "always_up"
    assert scores["skill"] == pytest.approx(1 - 0.24 / 0.25) and scores["accuracy_edge"] == pytest.approx(0.01)


def test_reliability_table_matches_sklearn_calibration_curve_and_ece_by_hand():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 500)
    y = (rng.uniform(0, 1, 500) < p**2).astype(int)  # over-confident upwards
    table = ds.reliability_table(y, p, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(table["observed_up"], prob_true)
    np.testing.assert_allclose(table["mean_predicted"], prob_pred)
    weights = table["count"] / len(p)
    assert ds.expected_calibration_error(y, p) == pytest.approx(np.sum(weights * np.abs(prob_true - prob_pred)))
    assert ds.expected_calibration_error(y, p) > ds.expected_calibration_error(y, p**2)


def test_belief_interval_is_the_jeffreys_interval_of_the_forecasts_bin():
    table = pd.DataFrame([{"bin_low": 0.5, "bin_high": 0.6, "mean_predicted": 0.55, "observed_up": 0.6, "ups": 60, "count": 100}])
    low, high = ds.belief_interval(0.57, table, level=0.9)
    assert (low, high) == pytest.approx((beta.ppf(0.05, 60.5, 40.5), beta.ppf(0.95, 60.5, 40.5)))
    assert ds.belief_interval(0.2, table) == (0.0, 1.0)  # no validation day behind a 0.2: nothing is known


def test_the_label_uses_the_next_close_only():
    prices = load_prices("AAPL").iloc[:400]
    rows = training_rows(build_features(prices, "AAPL"))
    labels = pd.Series(direction_labels(rows), index=rows.index)
    close = prices["close"]
    expected = (close.shift(-1) > close).astype(int).loc[rows.index]
    assert (labels == expected).all()
    day = rows.index[200]
    position = prices.index.get_loc(day)
    # truncate the data one day after `day`: its label is the same, it needed that one close and no more
    truncated = training_rows(build_features(prices.iloc[:position + 2], "AAPL"))
    assert direction_labels(truncated)[-1] == labels[day] and truncated.index[-1] == day
    # changing every close after t+1 changes nothing for t
    shocked = prices.copy()
    shocked.iloc[position + 2:, shocked.columns.get_indexer(["open", "high", "low", "close"])] *= 3
    assert direction_labels(training_rows(build_features(shocked, "AAPL")).loc[[day]])[0] == labels[day]
    # shifting the data by one day shifts the labels with it (the label belongs to t, not t+1)
    shifted = training_rows(build_features(prices.iloc[1:], "AAPL"))
    common = shifted.index.intersection(rows.index)
    assert (direction_labels(shifted.loc[common]) == labels.loc[common]).all()
    assert (today_up(rows)[1:] == labels.to_numpy()[:-1]).all()  # today's move is yesterday's label
    with pytest.raises(ValueError, match="known next close"):
        direction_labels(build_features(prices, "AAPL").iloc[-3:])


def test_calibration_improves_brier_of_a_miscalibrated_classifier():
    from core.direction import calibrated, make_classifier

    rng = np.random.default_rng(0)
    n = 1500
    X = rng.normal(size=(n, 5))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-0.6 * X[:, 0]))).astype(int)  # weak signal, like returns
    train, test = slice(0, 1000), slice(1000, n)
    overfit = make_classifier("xgb", {"max_depth": 6, "n_estimators": 200, "learning_rate": 0.3, "min_child_weight": 1.0,
                                      "subsample": 1.0, "colsample_bytree": 1.0})
    raw = overfit.fit(X[train], y[train]).predict_proba(X[test])[:, 1]
    fixed = calibrated(overfit, X[train], y[train]).predict_proba(X[test])[:, 1]
    assert brier_score_loss(y[test], fixed) < brier_score_loss(y[test], raw) - 0.02
    assert ds.expected_calibration_error(y[test], fixed) < ds.expected_calibration_error(y[test], raw)


@pytest.fixture(scope="module")
def trained_small():
    from core.direction import train_direction

    return train_direction("AAPL", "xgb", window_days=400, params={"n_estimators": 30})


def test_walk_forward_is_time_ordered_and_scores_every_baseline(trained_small):
    validation, metrics = trained_small.validation, trained_small.metrics
    assert validation.index.is_monotonic_increasing and validation.index.is_unique
    assert validation.index.min() > trained_small.train_start  # the first chunk only trains
    assert validation.index.max() < trained_small.train_end  # the last label is the close of train_end
    for fold, days in validation.groupby("fold"):
        later = validation[validation["fold"] > fold]
        assert later.empty or days.index.max() < later.index.min()
    for column in ("p_up", "p_raw", "p_logit", "p_always_up", "p_persistence"):
        assert validation[column].between(0, 1).all()
    assert metrics["accuracy"] == pytest.approx(accuracy_score(validation["label"], validation["p_up"] >= 0.5))
    assert metrics["baselines"]["always_up"]["brier"] == pytest.approx(
        brier_score_loss(validation["label"], validation["p_always_up"]))
    assert set(metrics["baselines"]) == {"always_up", "persistence"} and "logit" in metrics["reference"]
    assert len(metrics["fold_accuracy"]) == validation["fold"].nunique()
    assert trained_small.params["estimator"] == "xgb" and trained_small.params["max_depth"] in (2, 3)


def test_registered_direction_model_is_typed_has_its_metrics_file_and_serves_p_up(trained_small, fresh_db):
    from core.direction import forecast_direction
    from core.registry import PERFORMANCE_FILE, CertificationRequired, deploy, get_model, register
    from core.model_files import model_folder

    model_id = register(trained_small, db=fresh_db)
    row = get_model(model_id, db=fresh_db)
    assert row["model_type"] == "direction" and model_id.startswith("direction_v1_AAPL_")
    def refuse(constant):  # strict JSON: a bare NaN / Infinity in the file is an error for other programs
        raise ValueError(f"non-standard JSON constant {constant}")

    written = json.loads((model_folder(model_id) / PERFORMANCE_FILE).read_text(), parse_constant=refuse)
    assert written["accuracy"] == pytest.approx(trained_small.metrics["accuracy"]) and written["model_type"] == "direction"
    result = forecast_direction(model_id, db=fresh_db)
    assert 0 < result.p_up < 1 and result.belief_low <= result.belief_high
    assert result.as_of == row["train_end"] and not result.in_sample
    inside = forecast_direction(model_id, "2012-01-03", db=fresh_db)
    assert inside.in_sample
    with pytest.raises(CertificationRequired):  # deployable now, behind the same certification gate as a price model
        deploy(model_id, db=fresh_db)
    assert deploy(model_id, override=True, reason="test", db=fresh_db) == {"deployed": model_id, "previous": None}


def test_certification_in_classifier_terms_fails_honestly_below_the_baseline(trained_small, fresh_db, monkeypatch):
    from core.certification import certify
    from core.certification_stats import block_bootstrap_skill_ci
    from core.config import get_settings
    from core.model_card import write_model_artifacts
    from core.registry import get_model, register

    model_id = register(trained_small, db=fresh_db)
    result = certify(model_id, db=fresh_db)
    checks = {c.key: c for c in result.checks}
    metrics, settings = trained_small.metrics, get_settings()
    edge = checks["cv_accuracy_edge"]
    assert edge.value == pytest.approx(np.mean(metrics["fold_skill"]))
    assert edge.passed == (settings.cert_dir_min_accuracy_edge <= edge.value <= settings.cert_dir_max_accuracy_edge)
    assert checks["cv_accuracy_std"].value == pytest.approx(np.std(metrics["fold_skill"], ddof=1))
    validation = trained_small.validation
    misses = ((validation["p_up"] >= 0.5) != validation["label"]).astype(float).to_numpy()
    baseline = ((validation[f"p_{metrics['best_baseline']}"] >= 0.5) != validation["label"]).astype(float).to_numpy()
    assert checks["bootstrap_ci_lower"].value == pytest.approx(block_bootstrap_skill_ci(misses, baseline)[0])
    assert 1 / 30 <= checks["permutation_p"].value <= 1
    assert checks["latency_p95_ms"].value > 0
    assert result.certified == all(c.passed for c in result.checks)
    if np.mean(metrics["fold_skill"]) < 0:  # below the better baseline: never certified
        assert not result.certified and not get_model(model_id, db=fresh_db)["certified"]
    # the threshold lives in config: asking for more than the model does fails the check
    monkeypatch.setenv("CERT_DIR_MIN_ACCURACY_EDGE", str(edge.value + 0.01))
    again = certify(model_id, store=False, db=fresh_db)
    assert not {c.key: c for c in again.checks}["cv_accuracy_edge"].passed and not again.certified
    card = write_model_artifacts(model_id, db=fresh_db)["model_card"].read_text()
    assert "Metrics vs the baselines" in card and "Label permutation test" in card and "closes above" in card


@pytest.mark.parametrize("estimator", ["xgb", "logit"])
def test_the_fast_p_up_is_sklearns_predict_proba(estimator):
    from core.direction import calibrated, make_classifier, up_probability

    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 4))
    y = (rng.uniform(size=600) < 1 / (1 + np.exp(-X[:, 0]))).astype(int)
    model = calibrated(make_classifier(estimator, {"n_estimators": 20} if estimator == "xgb" else {}), X, y)
    np.testing.assert_allclose(up_probability(model, X[:50]), model.predict_proba(X[:50])[:, 1], rtol=1e-6, atol=1e-7)


def test_the_live_verdicts_gap_is_the_t_interval_of_the_daily_loss_differences():
    """Monitoring says a direction model "beats" a baseline only when this interval lies below 0."""
    import math

    from scipy import stats

    from core.direction_stats import paired_gap

    model = np.array([0.20, 0.25, 0.22, 0.30, 0.18, np.nan])
    baseline = np.array([0.25, 0.25, 0.26, 0.28, 0.24, 0.25])
    gap = model[:5] - baseline[:5]  # the day without a model loss is dropped
    half = stats.t.ppf(0.975, 4) * gap.std(ddof=1) / math.sqrt(5)
    mean, low, high, days = paired_gap(model, baseline)
    assert (mean, days) == (pytest.approx(gap.mean()), 5)
    assert low == pytest.approx(gap.mean() - half) and high == pytest.approx(gap.mean() + half)
    assert math.isnan(paired_gap([0.2], [0.1])[1])  # one day: no interval, so no verdict
