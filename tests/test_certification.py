"""Certification: each of the five checks on synthetic data with a known answer, the stored result,
the deploy gate with its audited override, and the checklist on Model Management."""
import time

import numpy as np
import pandas as pd
import pytest
from conftest import page_app

from core import certification, registry
from core.certification import certify, checklist, serving_latency_ms
from core.certification_stats import block_bootstrap_skill_ci, fold_skills, permutation_skill_test
from core.lifecycle import certify_with_card, register_with_artifacts
from core.registry import CertificationRequired
from core.store import audit_entries, close_all, get_db
from core.text import escape_markdown
from core.training import train_model

TRAIN_END = None  # the last synthetic day


def synthetic_prices(phi: float, days: int = 760, seed: int = 0) -> pd.DataFrame:
    """Daily prices whose log returns follow an AR(1) with coefficient `phi` (0 = pure noise).

    With phi = 0.4, 16% of tomorrow's return variance is predictable from today's return
    (`ret_1d` is a feature): a model with real signal, and a skill of a few percent, as a good
    real model would have. phi = 0 gives a series nothing can predict.
    """
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, 0.01, days)
    returns = np.empty(days)
    returns[0] = shocks[0]
    for t in range(1, days):
        returns[t] = phi * returns[t - 1] + shocks[t]
    close = 50.0 * np.exp(np.cumsum(returns))
    dates = pd.bdate_range("2009-10-01", periods=days)
    return pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "open": close, "high": close * 1.005,
                         "low": close * 0.995, "close": close, "adj_close": close,
                         "volume": rng.integers(900_000, 1_100_000, days).astype(float), "source": "synthetic"})


@pytest.fixture(scope="module")
def synthetic_registry(tmp_path_factory):
    """Its own database: an rf on a predictable ticker (SIG) and one on pure noise (NOISE)."""
    folder = tmp_path_factory.mktemp("certification")
    patch = pytest.MonkeyPatch()
    patch.setenv("MLSA_DB_PATH", str(folder / "app.db"))
    patch.setenv("MLSA_MODELS_DIR", str(folder / "models"))
    db = get_db()
    ids = {}
    for symbol, phi in (("SIG", 0.4), ("NOISE", 0.0)):
        frame = synthetic_prices(phi, seed=1 if phi else 2)
        frame["symbol"] = symbol
        db["prices"].insert_all(frame.to_dict("records"), pk=("symbol", "date"))
        trained = train_model(symbol, "rf", TRAIN_END, window_days=600, params={"n_estimators": 60})
        ids[symbol] = register_with_artifacts(trained)
    yield ids
    close_all()
    patch.undo()


# --- checks 1 and 2: fold skills ---------------------------------------------------------------------

def test_fold_skills_are_each_folds_mae_ratio():
    rng = np.random.default_rng(0)
    naive_error = rng.uniform(0.5, 1.5, 300)
    expected = np.array([0.10, -0.05, 0.02])
    fold = np.repeat([0, 1, 2], 100)
    last_close = np.full(300, 100.0)
    actual = last_close + naive_error  # naive predicts last_close: its error is naive_error
    predicted = actual - naive_error * (1 - expected[fold])  # model error = (1 - skill) * naive error
    validation = pd.DataFrame({"fold": fold, "last_close": last_close, "actual_close": actual, "predicted_close": predicted})
    np.testing.assert_allclose(fold_skills(validation), expected, atol=1e-12)
    with pytest.raises(ValueError, match="lack the column"):
        fold_skills(validation.drop(columns="fold"))


# --- check 4: block bootstrap ------------------------------------------------------------------------

def test_bootstrap_ci_of_a_constant_skill_is_that_skill():
    naive = np.random.default_rng(1).uniform(0.1, 2.0, 500)
    low, high = block_bootstrap_skill_ci(0.9 * naive, naive)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)


def test_bootstrap_ci_sides_follow_the_true_skill():
    rng = np.random.default_rng(2)
    naive = np.abs(rng.normal(0, 1, 800))
    better = naive * rng.uniform(0.80, 1.0, 800)  # true skill about +0.10
    worse = naive * rng.uniform(1.0, 1.2, 800)  # about -0.10
    low, high = block_bootstrap_skill_ci(better, naive)
    assert 0 < low < 0.1 < high
    low, high = block_bootstrap_skill_ci(worse, naive)
    assert low < -0.1 < high < 0


def test_blocks_widen_the_interval_when_errors_cluster():
    """Errors that come in runs (like volatility clusters) carry less information than independent
    ones: resampling single days would understate the uncertainty, blocks do not."""
    rng = np.random.default_rng(3)
    runs = np.repeat(rng.uniform(0.7, 1.3, 40), 25)  # 40 runs of 25 days with the same model/naive ratio
    naive = np.ones(1000)
    iid = np.subtract(*block_bootstrap_skill_ci(naive * runs, naive, block_length=1)[::-1])
    blocked = np.subtract(*block_bootstrap_skill_ci(naive * runs, naive, block_length=25)[::-1])
    assert blocked > 2 * iid


# --- check 3: permutation test -----------------------------------------------------------------------

def _features(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, 6)), rng.normal(0, 0.01, n)


def test_permutation_test_passes_real_signal_and_fails_noise():
    X, noise = _features(400, seed=4)
    close = np.full(400, 100.0)
    signal = 0.01 * X[:, 0] + noise  # half the variance is predictable from the first feature
    with_signal = permutation_skill_test(X, signal, close, "rf", {"n_estimators": 30}, n_jobs=1)
    assert with_signal.observed_skill > 0.1
    assert with_signal.p_value == pytest.approx(1 / 30)  # beats every shifted refit: the smallest p possible
    on_noise = permutation_skill_test(X, noise, close, "rf", {"n_estimators": 30}, n_jobs=1)
    assert on_noise.p_value >= 0.05 and on_noise.observed_skill < 0.05
    naive = permutation_skill_test(X, signal, close, "naive")
    assert naive.p_value == 1.0  # ignores its inputs: nothing to certify


def test_permutation_test_refuses_too_few_rows():
    X, y = _features(30, seed=5)
    with pytest.raises(ValueError, match="at least 50 rows"):
        permutation_skill_test(X, y, np.full(30, 10.0), "rf")


# --- check 5: latency, and the whole certification ---------------------------------------------------

def test_latency_measures_the_serving_path(synthetic_registry, monkeypatch):
    model_id = synthetic_registry["SIG"]
    fast = serving_latency_ms(model_id, n_calls=5)
    assert len(fast) == 5 and fast.max() < 2000
    real_forecast = certification.forecast

    def slow_forecast(*args, **kwargs):
        time.sleep(0.06)
        return real_forecast(*args, **kwargs)

    monkeypatch.setattr(certification, "forecast", slow_forecast)
    assert serving_latency_ms(model_id, n_calls=3).min() >= 60


def test_certify_a_model_with_real_signal(synthetic_registry):
    model_id = synthetic_registry["SIG"]
    steps = []
    result = certify_with_card(model_id, progress=lambda fraction, message: steps.append((fraction, message)))
    by_key = {c.key: c for c in result.checks}
    assert list(by_key) == ["cv_mean_skill", "cv_skill_std", "permutation_p", "bootstrap_ci_lower", "latency_p95_ms"]
    assert all(c.passed for c in result.checks), checklist(result.to_details()).to_string()
    assert result.certified and 0 < by_key["cv_mean_skill"].value < 0.10
    assert by_key["permutation_p"].value < 0.05
    assert steps[-1][0] == 1.0 and any("Permutation test" in m for _, m in steps)
    stored = registry.get_model(model_id)
    assert stored["certified"] == 1
    assert stored["metrics"]["certification"]["checks"][2]["value"] == by_key["permutation_p"].value
    assert audit_entries(target=model_id)[0]["action"] == "certify"
    table = checklist(stored["metrics"]["certification"])
    assert list(table["check"]) == [c.label for c in result.checks] and (table["passed"] == "✅ pass").all()
    assert table.loc[4, "target"] == "<= 2000.0 ms"


def test_an_implausibly_good_model_is_not_certified(synthetic_registry, monkeypatch):
    """Skill above the ceiling on daily returns means a leak; the same model fails check 1 only."""
    monkeypatch.setenv("MLSA_CERT_MAX_SKILL", "0.005")
    result = certify(synthetic_registry["SIG"], store=False)
    assert not result.certified
    assert [c.key for c in result.checks if not c.passed] == ["cv_mean_skill"]


# --- the deploy gate ---------------------------------------------------------------------------------

def test_deploy_gate_and_audited_override(synthetic_registry):
    noise_id = synthetic_registry["NOISE"]
    assert registry.get_model(noise_id)["certified"] == 0
    with pytest.raises(CertificationRequired, match="not certified"):
        registry.deploy(noise_id, reason="want it live")
    with pytest.raises(CertificationRequired, match="needs a reason"):
        registry.deploy(noise_id, override=True)
    assert registry.deployed_model("NOISE") is None
    registry.deploy(noise_id, actor="tester", reason="benchmark baseline", override=True)
    assert registry.deployed_model("NOISE")["model_id"] == noise_id
    entry = audit_entries(target=noise_id)[0]
    assert entry["action"] == "deploy" and entry["actor"] == "tester"
    assert '"override": true' in entry["details_json"] and "benchmark baseline" in entry["details_json"]


def test_certified_model_deploys_without_override(synthetic_registry):
    model_id = synthetic_registry["SIG"]
    if not registry.get_model(model_id)["certified"]:
        certify_with_card(model_id)
    registry.deploy(model_id, reason="certified")
    assert registry.deployed_model("SIG")["model_id"] == model_id
    assert '"override": false' in audit_entries(target=model_id)[0]["details_json"]


# --- Model Management: the checklist and the override --------------------------------------------------

def test_model_management_runs_certification_and_asks_for_override(synthetic_registry):
    before = registry.deployed_model("NOISE")
    other = register_with_artifacts(train_model("NOISE", "xgb", TRAIN_END, window_days=600, params={"n_estimators": 40}))
    at = page_app("pages/2_Model_Management.py").run()
    at.selectbox(key="mm_symbol").set_value("NOISE").run()
    at.selectbox(key="mm_model").set_value(other).run()
    assert not at.exception
    assert any("Certification not computed" in i.value for i in at.info)
    at.button(key="FormSubmitter:mm_cert_form-Run certification").click().run()
    assert not at.exception
    # not certified is news to act on, not a success: a warning naming the failed checks (ids shown literally)
    assert not at.success and any(escape_markdown(other) in w.value and "not certified" in w.value
                                  and escape_markdown("failed: ") in w.value for w in at.warning)
    assert any(s.value.startswith("Certification: ") for s in at.subheader)
    shown = next(df.value for df in at.dataframe if "measured" in df.value.columns)
    assert list(shown.columns[:3]) == ["check", "measured", "target"] and len(shown) == 5
    assert not registry.get_model(other)["certified"]  # trained on noise: the permutation test fails it

    at.button(key="mm_deploy").click().run()
    at.button(key="mm_confirm").click().run()  # no override ticked: refused
    assert any("not certified" in e.value for e in at.error)
    assert registry.deployed_model("NOISE") == before
    at.button(key="mm_deploy").click().run()
    at.checkbox(key="mm_override").check()
    at.text_input(key="mm_override_reason").input("compare on live data").run()
    at.button(key="mm_confirm").click().run()
    assert not at.exception
    assert registry.deployed_model("NOISE")["model_id"] == other
    assert "compare on live data" in audit_entries(target=other)[0]["details_json"]
