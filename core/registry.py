"""The model registry: versions, artifacts under models/, deploy / rollback / archive, lineage, hashes.

Only this module writes the `models` table. Artifacts are written to a temporary name and renamed
(atomic on POSIX), their sha256 is stored, and `load_model` refuses a file whose hash or feature
signature does not match what was registered. It reads the file once and deserialises the bytes it
verified, so a file swapped between the check and the load can never be served.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sqlite_utils
from sklearn.ensemble import RandomForestRegressor
from xgboost import XGBRegressor

from core.config import get_settings
from core.features import CURRENT_SIGNATURE, feature_signature
from core.store import audit, get_db, to_json, transaction, utc_now, where_clause
from core.training import NaiveModel, TrainedModel

log = logging.getLogger(__name__)

STATUSES = ("candidate", "deployed", "archived", "rolled_back", "rejected")  # rejected: failed a retrain's gate
# The model card, beside the artifact: `core.explain.write_model_artifacts` writes it last, so a registered
# model whose folder has no card had its explainability artifacts interrupted (`core.retrain_jobs.reconcile`).
MODEL_CARD = "model_card.md"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done as asked (unknown model, nothing to roll back to...)."""


class ModelIntegrityError(RegistryError):
    """A model artifact that is missing, tampered with, or built for another feature schema."""


class CertificationRequired(RegistryError):
    """A deploy of a model that has not passed certification, without `override=True` and a reason."""


class ChampionChanged(RegistryError):
    """A compare-and-swap deploy or rollback found another model deployed than the caller expected."""

    def __init__(self, symbol: str, expected: str | None, actual: str | None, message: str) -> None:
        super().__init__(message)
        self.symbol, self.expected, self.actual = symbol, expected, actual


# --- artifacts ----------------------------------------------------------------------------------------

def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, writer) -> None:
    """Call `writer(tmp_path)` then rename onto `path`; a crash leaves the old file or none, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        writer(Path(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_estimator(model_type: str, estimator: Any, folder: Path) -> Path:
    if model_type == "xgb":
        path = folder / "model.json"  # XGBoost's native, version-stable format
        atomic_write(path, lambda tmp: estimator.save_model(str(tmp)))
    elif model_type == "naive":
        path = folder / "model.json"
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps({"model": "naive", "predicts": "zero log return"})))
    else:
        path = folder / "model.joblib"
        atomic_write(path, lambda tmp: joblib.dump(estimator, tmp))
    return path


def _estimator_from_bytes(model_type: str, data: bytes) -> Any:
    """Deserialise an artifact from memory: the bytes whose hash was just checked, never the path again."""
    if model_type == "xgb":
        estimator = XGBRegressor()
        estimator.load_model(bytearray(data))  # XGBoost reads JSON / UBJ from a raw buffer
        return estimator
    if model_type == "naive":
        return NaiveModel()
    return joblib.load(io.BytesIO(data))


def model_folder(model_id: str) -> Path:
    return Path(get_settings().models_dir) / model_id


# --- register -----------------------------------------------------------------------------------------

def _model_id(model_type: str, version: int, symbol: str, train_end: pd.Timestamp) -> str:
    clean = "".join(ch for ch in symbol if ch.isalnum())
    return f"{model_type}_v{version}_{clean}_{pd.Timestamp(train_end):%Y%m%d}"


def register(
    trained: TrainedModel,
    parent_id: str | None = None,
    reason: str = "trained",
    actor: str = "user",
    db: sqlite_utils.Database | None = None,
) -> str:
    """Store a trained model as a new candidate version; returns its model_id.

    Only the model and its record: `core.lifecycle.register_with_artifacts` also writes the
    explainability artifacts and model card (explainability sits above the registry).
    """
    db = db or get_db()
    folder = None
    try:
        with transaction(db):
            version = db.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM models WHERE symbol = ? AND model_type = ?",
                [trained.symbol, trained.model_type],
            ).fetchone()[0]
            model_id = _model_id(trained.model_type, version, trained.symbol, trained.train_end)
            if get_model(model_id, db=db, missing_ok=True) is not None:  # e.g. BRK-B and BRK.B both give BRKB
                raise RegistryError(f"{model_id} already exists for another ticker spelling; rename the ticker.")
            folder = model_folder(model_id)
            if folder.exists():  # left by a crash before its row was committed: not a registered model
                shutil.rmtree(folder)
            artifact = _save_estimator(trained.model_type, trained.estimator, folder)
            atomic_write(folder / "validation.csv", lambda tmp: trained.validation.to_csv(tmp, index_label="date"))
            db["models"].insert({
                "model_id": model_id, "symbol": trained.symbol, "model_type": trained.model_type,
                "version": version, "status": "candidate", "created_at": utc_now(),
                "train_start": f"{trained.train_start:%Y-%m-%d}", "train_end": f"{trained.train_end:%Y-%m-%d}",
                "params_json": to_json(trained.params), "features_json": to_json(trained.feature_columns),
                "feature_signature": feature_signature(trained.feature_columns),
                "metrics_json": to_json({**trained.metrics, "data_source": trained.data_source}),
                "artifact_path": str(artifact.relative_to(Path(get_settings().models_dir))),
                "artifact_sha256": file_sha256(artifact), "parent_id": parent_id, "reason": reason,
                "certified": 0,
            })
            audit(db, actor, "register", model_id, {"symbol": trained.symbol, "parent_id": parent_id, "reason": reason})
    except BaseException:
        if folder is not None and folder.exists() and get_model(folder.name, db=db, missing_ok=True) is None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info("registered %s", model_id)
    return model_id


# --- read ---------------------------------------------------------------------------------------------

def _decode(row: dict) -> dict:
    row = dict(row)
    row["params"] = json.loads(row.get("params_json") or "{}")
    row["features"] = json.loads(row.get("features_json") or "[]")
    row["metrics"] = json.loads(row.get("metrics_json") or "{}")
    return row


def get_model(model_id: str, db: sqlite_utils.Database | None = None, missing_ok: bool = False) -> dict | None:
    db = db or get_db()
    rows = list(db.query("SELECT * FROM models WHERE model_id = ?", [model_id]))
    if not rows:
        if missing_ok:
            return None
        raise RegistryError(f"No model with id {model_id!r} in the registry.")
    return _decode(rows[0])


def list_models(symbol: str | None = None, status: str | None = None, db: sqlite_utils.Database | None = None) -> list[dict]:
    """Models newest first, optionally filtered by ticker and status."""
    db = db or get_db()
    where, params = where_clause(("symbol = ?", symbol), ("status = ?", status))
    return [_decode(r) for r in db.query(f"SELECT * FROM models {where} ORDER BY created_at DESC, model_id", params)]


def deployed_model(symbol: str, db: sqlite_utils.Database | None = None) -> dict | None:
    found = list_models(symbol, "deployed", db=db)
    return found[0] if found else None


def models_table(symbol: str | None = None, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """The registry as a display table: one row per model with its headline validation metrics."""
    rows = []
    for m in list_models(symbol, db=db):
        metrics = m["metrics"]
        rows.append({
            "model_id": m["model_id"], "symbol": m["symbol"], "type": m["model_type"], "version": m["version"],
            "status": m["status"], "certified": bool(m["certified"]), "created": m["created_at"][:16].replace("T", " "),
            "train_end": m["train_end"], "MAE $": metrics.get("mae"), "naive MAE $": metrics.get("naive", {}).get("mae"),
            "skill": metrics.get("skill"), "RMSE $": metrics.get("rmse"), "MAPE %": metrics.get("mape"),
            "direction %": metrics.get("directional_accuracy"), "parent": m["parent_id"] or "",
        })
    return pd.DataFrame(rows)


def lineage(model_id: str, db: sqlite_utils.Database | None = None) -> list[dict]:
    """The chain of ancestors, oldest first, ending with `model_id` itself."""
    chain, seen = [], set()
    current: str | None = model_id
    while current and current not in seen:
        seen.add(current)
        model = get_model(current, db=db, missing_ok=True)
        if model is None:
            break
        chain.append(model)
        current = model["parent_id"]
    return list(reversed(chain))


def children(model_id: str, db: sqlite_utils.Database | None = None) -> list[dict]:
    db = db or get_db()
    return [_decode(r) for r in db.query("SELECT * FROM models WHERE parent_id = ? ORDER BY created_at", [model_id])]


def family_table(model_id: str, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Ancestors (oldest first), the model itself and its children, one row each with the reason it was
    made: a table shows reasons literally (they are user text), where markdown would render them."""
    chain = lineage(model_id, db=db)
    rows = [{"relation": "ancestor" if m["model_id"] != model_id else "this model", **m} for m in chain]
    rows += [{"relation": "child", **m} for m in children(model_id, db=db)]
    return pd.DataFrame(rows, columns=["relation", "model_id", "status", "created_at", "reason"]) if rows else \
        pd.DataFrame(columns=["relation", "model_id", "status", "created_at", "reason"])


def model_facts(model: dict) -> pd.DataFrame:
    """What a reader asks about one model, as (fact, value) rows: data windows, signature, artifact, features."""
    metrics = model["metrics"]
    facts = {
        "ticker / type / version": f"{model['symbol']} · {model['model_type']} · v{model['version']}",
        "trained on": f"{model['train_start']} → {model['train_end']} ({metrics.get('data_source', '')})",
        "validation window": f"{metrics['validation_start']} → {metrics['validation_end']} "
                             f"({metrics['n']} days, {len(metrics['fold_skill'])} walk-forward folds)",
        "per-fold skill": ", ".join(f"{s:+.3f}" for s in metrics["fold_skill"]),
        "feature signature": model["feature_signature"],
        "artifact": f"{model['artifact_path']} (sha256 {model['artifact_sha256']})",
        "features": ", ".join(model["features"]),
        "parameters": json.dumps(model["params"], sort_keys=True),
    }
    return pd.DataFrame({"fact": list(facts), "value": list(facts.values())})


def validation_predictions(model_id: str) -> pd.DataFrame:
    """The walk-forward out-of-sample predictions saved at registration (drift and certification use them)."""
    path = model_folder(model_id) / "validation.csv"
    if not path.exists():
        raise ModelIntegrityError(f"{model_id}: validation predictions are missing from {path.parent}.")
    try:
        return pd.read_csv(path, index_col="date", parse_dates=["date"])
    except OSError as exc:  # unreadable (permissions, I/O): in words, like the model file
        raise _unreadable(model_id, path, exc) from exc


# --- load (verified) ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    symbol: str
    model_type: str
    estimator: Any
    feature_columns: list[str]
    interval_halfwidth: float
    row: dict

    def predict_returns(self, X: np.ndarray) -> np.ndarray:
        """Predicted log returns. A forest averages its trees directly: the same numbers as
        `RandomForestRegressor.predict` (tested), without its per-call joblib dispatch, which costs
        ~17 ms for one row of a 200-tree forest on the serving path."""
        if isinstance(self.estimator, RandomForestRegressor):
            X32 = np.asarray(X, dtype=np.float32)
            return np.mean([tree.tree_.predict(X32)[:, 0] for tree in self.estimator.estimators_], axis=0)
        return np.asarray(self.estimator.predict(X), dtype=float)


_cache: dict[tuple[str, str, int, int], LoadedModel] = {}
_cache_lock = threading.Lock()


def _unreadable(model_id: str, path: Path, exc: OSError) -> ModelIntegrityError:
    """A model file that cannot be read, in words: which file, why, and what to check (never a raw OSError)."""
    advice = "Retrain the model or restore its file from a backup; the database itself is fine."
    if isinstance(exc, FileNotFoundError):
        return ModelIntegrityError(f"{model_id}: the artifact {path} is missing. {advice}")
    if isinstance(exc, PermissionError):
        return ModelIntegrityError(
            f"{model_id}: the artifact {path} cannot be read: permission denied for the user running the app "
            f"(uid {os.geteuid()}). Check the file's owner and mode (e.g. `ls -l {path}`; it needs read permission, "
            "its folders execute permission). It was not loaded; the database itself is fine.")
    return ModelIntegrityError(
        f"{model_id}: the artifact {path} cannot be read ({exc.strerror or type(exc).__name__}"
        f"{f', errno {exc.errno}' if exc.errno else ''}). Check the disk and the file system that holds "
        f"{path.parent}; if the file is damaged, retrain the model or restore it from a backup. The database itself is fine.")


def _read_verified(model_id: str, path: Path, expected_sha256: str) -> bytes:
    """The artifact's bytes, read once, if their sha256 is the one registered (ModelIntegrityError if not,
    also when the file cannot be read at all: missing, permission denied, an I/O error)."""
    advice = "Retrain the model or restore its file from a backup; the database itself is fine."
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _unreadable(model_id, path, exc) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"{model_id}: the artifact's sha256 is {actual[:12]}..., the registry recorded "
            f"{expected_sha256[:12]}...: the file was changed after registration. It was not loaded. {advice}"
        )
    return data


def load_model(model_id: str, db: sqlite_utils.Database | None = None) -> LoadedModel:
    """The fitted model, after checking its file's sha256 and its feature signature.

    The file is read once; the hash is computed on those bytes and the model deserialised from the
    same bytes. Verified models are kept in memory keyed by (file, recorded hash, mtime, size), so a
    file changed on disk is read and hashed again before use (a cached model is always one whose
    bytes were verified); the feature signature is checked on every call.
    """
    row = get_model(model_id, db=db)
    signature = feature_signature(row["features"])  # checked on every call: the registry row can change
    if signature != row["feature_signature"] or signature != CURRENT_SIGNATURE:
        raise ModelIntegrityError(
            f"{model_id}: it was trained on a different feature schema than this app builds "
            f"({len(row['features'])} features, signature {row['feature_signature'][:12]}...). Retrain it."
        )
    path = Path(get_settings().models_dir) / row["artifact_path"]
    try:
        stat = path.stat()
    except OSError as exc:  # missing, a folder without execute permission, an I/O error: all in words
        raise _unreadable(model_id, path, exc) from exc
    key = (str(path), row["artifact_sha256"], stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    data = _read_verified(model_id, path, row["artifact_sha256"])
    try:
        estimator = _estimator_from_bytes(row["model_type"], data)
    except Exception as exc:
        raise ModelIntegrityError(f"{model_id}: the artifact could not be read ({exc}). Retrain the model or "
                                  "restore its file from a backup.") from exc
    loaded = LoadedModel(
        model_id=model_id, symbol=row["symbol"], model_type=row["model_type"], estimator=estimator,
        feature_columns=row["features"], interval_halfwidth=float(row["metrics"]["interval_halfwidth_logret"]),
        row=row,
    )
    with _cache_lock:
        _cache[key] = loaded
    return loaded


# --- lifecycle ----------------------------------------------------------------------------------------

def _set_status(db: sqlite_utils.Database, model_id: str, status: str) -> None:
    db.execute("UPDATE models SET status = ? WHERE model_id = ?", [status, model_id])


NO_CHAMPION = ""  # as `expected_champion` / `expected_current`: "no model was deployed" (None: no expectation)


def _who_deployed(db: sqlite_utils.Database, model_id: str) -> str:
    """ " (deployed by ui at 2024-05-01 09:30:12 UTC)": the audit record that made `model_id` the deployed one."""
    row = db.execute("SELECT actor, at, action FROM audit_log WHERE action IN ('deploy', 'rollback') AND target = ? "
                     "ORDER BY id DESC LIMIT 1", [model_id]).fetchone()
    if row is None:
        return ""
    how = "deployed" if row[2] == "deploy" else "restored by a rollback"
    return f" ({how} by {row[0]} at {str(row[1])[:19].replace('T', ' ')} UTC)"


def _check_current(symbol: str, current: dict | None, expected: str | None, refused: str,
                   db: sqlite_utils.Database) -> None:
    """Compare-and-swap: refuse when the deployed model is not `expected` (None: no expectation;
    `NO_CHAMPION`: none was deployed). The refusal says who deployed the model found instead, and when."""
    actual = current["model_id"] if current else None
    if expected is not None and (actual or NO_CHAMPION) != expected:
        who = _who_deployed(db, actual) if actual else ""
        raise ChampionChanged(symbol, expected or None, actual,
                              f"The deployed {symbol} model changed from {expected or 'none'} to {actual or 'none'}"
                              f"{who} since it was checked; {refused}.")


def deploy(model_id: str, actor: str = "user", reason: str = "", db: sqlite_utils.Database | None = None,
           override: bool = False, expected_champion: str | None = None) -> dict:
    """Make `model_id` the one deployed model of its ticker; the previous one is archived.

    An uncertified model (core.certification) is refused with `CertificationRequired` unless
    `override=True` with a `reason`; the override and the reason are written to the audit log.
    With `expected_champion`, the deploy happens only if that model is still the deployed one,
    checked inside the write transaction (a retrain gated against a champion that someone else
    replaced meanwhile must not overwrite their choice): otherwise `ChampionChanged`.
    """
    db = db or get_db()
    with transaction(db):
        model = get_model(model_id, db=db)
        _check_current(model["symbol"], deployed_model(model["symbol"], db=db), expected_champion,
                       f"{model_id} was not deployed", db)
        if model["status"] == "deployed":
            raise RegistryError(f"{model_id} is already deployed.")
        load_model(model_id, db=db)  # never deploy a file that would fail to load (checked before certification)
        if not model["certified"] and not override:
            raise CertificationRequired(
                f"{model_id} is not certified: run the certification on Model Management, or deploy it "
                "with an explicit override and a reason (recorded in the audit log)."
            )
        if not model["certified"] and not reason.strip():
            raise CertificationRequired(f"Deploying the uncertified {model_id} with an override needs a reason for the audit log.")
        previous = deployed_model(model["symbol"], db=db)
        if previous:
            _set_status(db, previous["model_id"], "archived")
        _set_status(db, model_id, "deployed")
        audit(db, actor, "deploy", model_id, {
            "symbol": model["symbol"], "previous": previous["model_id"] if previous else None, "reason": reason,
            "certified": bool(model["certified"]), "override": bool(override and not model["certified"]),
        })
    log.info("deployed %s (previous: %s)", model_id, previous["model_id"] if previous else None)
    return {"deployed": model_id, "previous": previous["model_id"] if previous else None}


def deployment_history(symbol: str, db: sqlite_utils.Database | None = None) -> list[str]:
    """Model ids deployed for `symbol`, oldest first (from the audit log)."""
    db = db or get_db()
    rows = db.query(
        "SELECT a.target FROM audit_log a JOIN models m ON m.model_id = a.target "
        "WHERE a.action IN ('deploy', 'rollback') AND m.symbol = ? ORDER BY a.id",
        [symbol],
    )
    return [r["target"] for r in rows]


def _rollback_target(symbol: str, current_id: str, to: str | None, db: sqlite_utils.Database) -> str:
    """The archived model deployed most recently before `current_id`, or `to` if it qualifies."""
    history = [m for m in reversed(deployment_history(symbol, db=db)) if m != current_id]
    eligible = [m for m in history if (row := get_model(m, db=db, missing_ok=True)) and row["status"] == "archived"]
    if to is not None:
        if to not in eligible:
            raise RegistryError(f"{to} cannot be rolled back to: it is not an archived, earlier deployed {symbol} model.")
        return to
    if not eligible:
        raise RegistryError(f"{symbol} has no earlier deployed version to roll back to.")
    return eligible[0]


def rollback_candidate(symbol: str, db: sqlite_utils.Database | None = None) -> str | None:
    """The model a rollback of `symbol` would go back to, or None (then "Roll back" has nothing to do)."""
    db = db or get_db()
    current = deployed_model(symbol, db=db)
    if current is None:
        return None
    try:
        return _rollback_target(symbol, current["model_id"], None, db)
    except RegistryError:
        return None


def rollback(symbol: str, actor: str = "user", reason: str = "", db: sqlite_utils.Database | None = None,
             to: str | None = None, expected_current: str | None = None) -> dict:
    """Redeploy the version that was deployed before the current one; the current one is marked rolled_back.

    `to` names the model to go back to (the validation window goes back to the champion it replaced,
    whatever was deployed in between); `expected_current` makes it a compare-and-swap like `deploy`.
    The audit record and the rolled-back model's reason name both models.
    """
    db = db or get_db()
    with transaction(db):
        current = deployed_model(symbol, db=db)
        if current is None:
            raise RegistryError(f"No model is deployed for {symbol}: nothing to roll back.")
        _check_current(symbol, current, expected_current, "nothing was rolled back", db)
        target = _rollback_target(symbol, current["model_id"], to, db)
        load_model(target, db=db)
        _set_status(db, current["model_id"], "rolled_back")
        _set_status(db, target, "deployed")
        note = f"rolled back to {target} on {utc_now()[:10]}" + (f": {reason}" if reason else "")
        db.execute("UPDATE models SET reason = COALESCE(reason || '; ', '') || ? WHERE model_id = ?",
                   [note, current["model_id"]])
        details = {"symbol": symbol, "rolled_back": current["model_id"], "restored": target, "reason": reason}
        audit(db, actor, "rollback", target, details)  # target: the model now deployed (deployment_history)
        audit(db, actor, "rolled_back", current["model_id"], details)  # shown in that model's own audit log
    log.info("rolled back %s: %s -> %s", symbol, current["model_id"], target)
    return {"deployed": target, "previous": current["model_id"]}


def archive(model_id: str, actor: str = "user", db: sqlite_utils.Database | None = None) -> None:
    db = db or get_db()
    with transaction(db):
        model = get_model(model_id, db=db)
        if model["status"] == "deployed":
            raise RegistryError(f"{model_id} is deployed: deploy another version or roll back first.")
        _set_status(db, model_id, "archived")
        audit(db, actor, "archive", model_id, {"symbol": model["symbol"]})


def reject(model_id: str, reason: str, actor: str = "retrain", db: sqlite_utils.Database | None = None) -> None:
    """Mark a challenger that failed its validation gate as `rejected`, with the gate's words as its reason,
    so the registry shows what happened to it (a plain "candidate" reads as still waiting for a decision).
    It stays on disk and can still be deployed on purpose (with an override, like any uncertified model)."""
    db = db or get_db()
    with transaction(db):
        model = get_model(model_id, db=db)
        if model["status"] != "candidate":
            raise RegistryError(f"{model_id} is {model['status']}: only a candidate can be rejected.")
        db.execute("UPDATE models SET status = 'rejected', reason = ? WHERE model_id = ?",
                   [f"{model['reason']}; rejected: {reason}", model_id])
        audit(db, actor, "reject", model_id, {"symbol": model["symbol"], "why": reason})


def set_certification(model_id: str, certified: bool, details: dict[str, Any], db: sqlite_utils.Database | None = None) -> None:
    """Record a certification result beside the model (the certification module computes it)."""
    db = db or get_db()
    with transaction(db):
        model = get_model(model_id, db=db)
        metrics = {**model["metrics"], "certification": details}
        db.execute("UPDATE models SET certified = ?, metrics_json = ? WHERE model_id = ?",
                   [int(certified), to_json(metrics), model_id])
        audit(db, "system", "certify", model_id, {"certified": certified})
