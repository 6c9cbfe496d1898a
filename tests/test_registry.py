"""Registry: round trip, integrity checks (hash, schema), deploy / rollback invariants, atomic writes."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from core import model_files, registry
from core.features import FEATURE_COLUMNS
from core.registry import ModelIntegrityError, RegistryError
from core.training import train_model


@pytest.fixture()
def two_models(fresh_db):
    rf = registry.register(train_model("IBM", "rf", "2008-12-31", window_days=400, params={"n_estimators": 30}))
    xgb = registry.register(train_model("IBM", "xgb", "2008-12-31", window_days=400, params={"n_estimators": 40}))
    return rf, xgb


def test_round_trip_predicts_the_same(two_models):
    rf_id, xgb_id = two_models
    assert rf_id == "rf_v1_IBM_20081231" and xgb_id == "xgb_v1_IBM_20081231"
    row = registry.get_model(xgb_id)
    assert row["status"] == "candidate" and row["features"] == FEATURE_COLUMNS
    assert len(row["artifact_sha256"]) == 64 and row["artifact_path"].endswith("model.json")
    X = np.random.default_rng(0).normal(0, 0.02, (8, len(FEATURE_COLUMNS)))
    for model_id in two_models:
        loaded = registry.load_model(model_id)
        assert loaded.predict_returns(X).shape == (8,)
    rf = registry.load_model(rf_id)
    np.testing.assert_allclose(rf.predict_returns(X), rf.estimator.predict(X), rtol=1e-12)  # fast path == sklearn


def test_versions_count_per_symbol_and_type(two_models):
    again = registry.register(train_model("IBM", "rf", "2009-06-30", window_days=400, params={"n_estimators": 20}))
    assert again == "rf_v2_IBM_20090630"


def test_tampered_artifact_is_refused(two_models):
    rf_id, xgb_id = two_models
    path = model_files.model_folder(xgb_id) / "model.json"
    text = path.read_text()
    path.write_text(text.replace('"base_score"', '"base_score" ', 1))  # one byte more
    with pytest.raises(ModelIntegrityError, match="sha256.*changed after registration"):
        registry.load_model(xgb_id)
    model_files.model_folder(rf_id).joinpath("model.joblib").unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        registry.load_model(rf_id)


_OPENED: list[str] = []
_WATCHING: list[bool] = []


def _count_opens(event: str, args: tuple) -> None:
    """An audit hook (hooks cannot be removed, so it records only while a test watches)."""
    if _WATCHING and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_count_opens)


def test_loader_opens_the_file_once_and_loads_the_bytes_it_verified(two_models, monkeypatch):
    """The file is swapped after it was read and hashed, before it is deserialised: the verified bytes are
    what gets loaded, and the swapped file is refused on the next load."""
    X = np.random.default_rng(1).normal(0, 0.02, (5, len(FEATURE_COLUMNS)))
    real = model_files.estimator_from_bytes
    for model_id in two_models:
        path = model_files.model_folder(model_id) / Path(registry.get_model(model_id)["artifact_path"]).name
        expected = registry.load_model(model_id).predict_returns(X)
        registry._cache.clear()

        other = path.with_name("swapped")
        other.write_bytes(b"{}" if path.suffix == ".json" else b"not a joblib file")

        def swap_then_load(model_type, data, path=path, other=other):
            os.replace(other, path)  # another file renamed in after the read and the check
            return real(model_type, data)

        monkeypatch.setattr(model_files, "estimator_from_bytes", swap_then_load)
        _OPENED.clear()
        _WATCHING.append(True)
        try:
            loaded = registry.load_model(model_id)
        finally:
            _WATCHING.clear()
        monkeypatch.setattr(model_files, "estimator_from_bytes", real)
        assert _OPENED.count(str(path)) == 1, _OPENED  # opened once, for reading (the swap writes after it)
        np.testing.assert_allclose(loaded.predict_returns(X), expected)  # the verified bytes, not the swapped file
        with pytest.raises(ModelIntegrityError) as refused:
            registry.load_model(model_id)
        message = str(refused.value)
        assert model_id in message and "changed after registration" in message
        assert "Retrain the model or restore its file" in message and "database itself is fine" in message
        assert "move" not in message.lower() and "delete" not in message.lower()


def test_schema_mismatch_is_refused(two_models, fresh_db):
    rf_id, _ = two_models
    fresh_db.execute("UPDATE models SET features_json = ? WHERE model_id = ?",
                     [json.dumps(FEATURE_COLUMNS[:-1] + ["old_feature"]), rf_id])
    with pytest.raises(ModelIntegrityError, match="different feature schema"):
        registry.load_model(rf_id)


def test_deploy_keeps_one_deployed_and_rollback_restores(two_models, fresh_db):
    rf_id, xgb_id = two_models
    with pytest.raises(RegistryError, match="No model is deployed"):
        registry.rollback("IBM")
    registry.deploy(rf_id, reason="test", override=True)
    with pytest.raises(RegistryError, match="no earlier deployed version"):
        registry.rollback("IBM")
    result = registry.deploy(xgb_id, reason="test", override=True)
    assert result == {"deployed": xgb_id, "previous": rf_id}
    statuses = {m["model_id"]: m["status"] for m in registry.list_models("IBM")}
    assert statuses == {rf_id: "archived", xgb_id: "deployed"}
    assert registry.rollback("IBM") == {"deployed": rf_id, "previous": xgb_id}
    statuses = {m["model_id"]: m["status"] for m in registry.list_models("IBM")}
    assert statuses == {rf_id: "deployed", xgb_id: "rolled_back"}
    assert fresh_db.execute("SELECT COUNT(*) FROM models WHERE symbol='IBM' AND status='deployed'").fetchone()[0] == 1
    from core.store import audit_entries

    entries = list(reversed(audit_entries()))
    assert [e["action"] for e in entries][-4:] == ["deploy", "deploy", "rollback", "rolled_back"]
    for entry in entries[-2:]:  # both records name the model rolled back and the one restored
        assert json.loads(entry["details_json"])["rolled_back"] == xgb_id
        assert json.loads(entry["details_json"])["restored"] == rf_id
    assert [e["target"] for e in entries[-2:]] == [rf_id, xgb_id]
    assert registry.get_model(xgb_id)["reason"].endswith(f"rolled back to {rf_id} on {entries[-1]['at'][:10]}")
    with pytest.raises(RegistryError, match="already deployed"):
        registry.deploy(rf_id, reason="test", override=True)


def test_deploy_refuses_a_tampered_model_and_changes_nothing(two_models):
    rf_id, xgb_id = two_models
    registry.deploy(rf_id, reason="test", override=True)
    (model_files.model_folder(xgb_id) / "model.json").write_text("{}")
    with pytest.raises(ModelIntegrityError):
        registry.deploy(xgb_id, reason="test", override=True)
    assert registry.deployed_model("IBM")["model_id"] == rf_id


def test_failed_registration_leaves_no_row_and_no_files(fresh_db, monkeypatch):
    trained = train_model("IBM", "xgb", "2008-12-31", window_days=400, params={"n_estimators": 20})
    original_audit = registry.audit

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(registry, "audit", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        registry.register(trained)
    monkeypatch.setattr(registry, "audit", original_audit)
    assert registry.list_models() == []
    assert not model_files.model_folder("xgb_v1_IBM_20081231").exists()
    assert registry.register(trained) == "xgb_v1_IBM_20081231"  # the version number was not burnt


def test_lineage(two_models):
    rf_id, _ = two_models
    child = registry.register(train_model("IBM", "rf", "2009-06-30", window_days=400, params={"n_estimators": 20}),
                              parent_id=rf_id, reason="retrained on drift")
    assert [m["model_id"] for m in registry.lineage(child)] == [rf_id, child]
    assert [m["model_id"] for m in registry.children(rf_id)] == [child]
