"""The model registry: the `models` table (versions, lineage, deploy / rollback / archive) and the verified load.

Only this module writes the `models` table. The files beside each row (atomic writes, sha256, the
estimator's format) are `core.model_files`; the registry stores each artifact's sha256, and
`load_model` refuses a file whose hash or feature signature does not match what was registered. It
reads the file once and deserialises the bytes it verified, so a file swapped between the check and
the load can never be served.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import sqlite_utils

from core import model_files
from core.config import get_settings
from core.features import CURRENT_SIGNATURE, feature_signature
from core.model_files import LoadedModel, atomic_write, file_sha256, model_folder, unreadable_message
from core.store import audit, get_db, to_json, transaction, utc_now, where_clause
from core.text import to_strict_json
from core.training import TrainedModel

log = logging.getLogger(__name__)

PERFORMANCE_FILE = "performance_metrics.json"  # every model's walk-forward metrics, beside its artifact
SERVABLE_TYPES = ("naive", "rf", "xgb")  # price forecasters, served by `core.predict.predict`
DIRECTION_TYPE = "direction"  # classifiers of tomorrow's direction, served by `core.predict.predict_direction`
DEPLOYABLE_TYPES = (*SERVABLE_TYPES, DIRECTION_TYPE)
KINDS = ("price", "direction")  # a ticker has at most one deployed model of each kind (store migration 007)
STATUSES = ("candidate", "deployed", "archived", "rolled_back", "rejected")  # rejected: failed a retrain's gate


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
            artifact = model_files.save_estimator(trained.model_type, trained.estimator, folder)
            atomic_write(folder / "validation.csv", lambda tmp: trained.validation.to_csv(tmp, index_label="date"))
            atomic_write(folder / PERFORMANCE_FILE, lambda tmp: tmp.write_text(to_strict_json(
                {"model_id": model_id, "model_type": trained.model_type, **trained.metrics})))
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


def list_models(symbol: str | None = None, status: str | None = None, db: sqlite_utils.Database | None = None,
                model_types: tuple[str, ...] | None = None) -> list[dict]:
    """Models newest first, optionally filtered by ticker, status and model type (`SERVABLE_TYPES`: the price
    models, what the pages built on served forecasts (drift, A/B tests, explainability) can use)."""
    db = db or get_db()
    where, params = where_clause(("symbol = ?", symbol), ("status = ?", status))
    rows = [_decode(r) for r in db.query(f"SELECT * FROM models {where} ORDER BY created_at DESC, model_id", params)]
    return rows if model_types is None else [r for r in rows if r["model_type"] in model_types]


def model_kind(model_type: str) -> str:
    """"price" or "direction": what a deployed model answers. Deployment, rollback and A/B routing are per kind,
    so deploying a direction model never archives the ticker's price model, nor the reverse."""
    return "direction" if model_type == DIRECTION_TYPE else "price"


def deployed_model(symbol: str, db: sqlite_utils.Database | None = None, kind: str = "price") -> dict | None:
    """The ticker's deployed model of `kind` (default: the price model, what most callers serve), or None."""
    found = [m for m in list_models(symbol, "deployed", db=db) if model_kind(m["model_type"]) == kind]
    return found[0] if found else None


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

_cache: dict[tuple[str, str, int, int], LoadedModel] = {}
_cache_lock = threading.Lock()


def _unreadable(model_id: str, path: Path, exc: OSError) -> ModelIntegrityError:
    """A model file that cannot be read, in words (`model_files.unreadable_message`), never a raw OSError."""
    return ModelIntegrityError(unreadable_message(model_id, path, exc))


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
        estimator = model_files.estimator_from_bytes(row["model_type"], data)
    except Exception as exc:
        raise ModelIntegrityError(f"{model_id}: the artifact could not be read ({exc}). Retrain the model or "
                                  "restore its file from a backup.") from exc
    loaded = LoadedModel(
        model_id=model_id, symbol=row["symbol"], model_type=row["model_type"], estimator=estimator,
        feature_columns=row["features"], interval_halfwidth=float(row["metrics"].get("interval_halfwidth_logret", "nan")),  # none for direction models
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
    """Make `model_id` the one deployed model of its ticker and kind (`model_kind`); the previous one is archived.

    An uncertified model (core.certification) is refused with `CertificationRequired` unless
    `override=True` with a `reason`; the override and the reason are written to the audit log.
    With `expected_champion`, the deploy happens only if that model is still the deployed one,
    checked inside the write transaction (a retrain gated against a champion that someone else
    replaced meanwhile must not overwrite their choice): otherwise `ChampionChanged`.
    """
    db = db or get_db()
    with transaction(db):
        model = get_model(model_id, db=db)
        kind = model_kind(model["model_type"])
        _check_current(model["symbol"], deployed_model(model["symbol"], db=db, kind=kind), expected_champion,
                       f"{model_id} was not deployed", db)
        if model["status"] == "deployed":
            raise RegistryError(f"{model_id} is already deployed.")
        if model["model_type"] not in DEPLOYABLE_TYPES:
            raise RegistryError(f"{model_id} is a {model['model_type']} model, which has no serving path: it cannot be deployed.")
        load_model(model_id, db=db)  # never deploy a file that would fail to load (checked before certification)
        if not model["certified"] and not override:
            raise CertificationRequired(
                f"{model_id} is not certified: run the certification on Model Management, or deploy it "
                "with an explicit override and a reason (recorded in the audit log)."
            )
        if not model["certified"] and not reason.strip():
            raise CertificationRequired(f"Deploying the uncertified {model_id} with an override needs a reason for the audit log.")
        previous = deployed_model(model["symbol"], db=db, kind=kind)
        if previous:
            _set_status(db, previous["model_id"], "archived")
        _set_status(db, model_id, "deployed")
        audit(db, actor, "deploy", model_id, {
            "symbol": model["symbol"], "kind": kind, "previous": previous["model_id"] if previous else None, "reason": reason,
            "certified": bool(model["certified"]), "override": bool(override and not model["certified"]),
        })
    log.info("deployed %s (previous: %s)", model_id, previous["model_id"] if previous else None)
    return {"deployed": model_id, "previous": previous["model_id"] if previous else None}


def deployment_history(symbol: str, db: sqlite_utils.Database | None = None, kind: str = "price") -> list[str]:
    """Model ids of `kind` deployed for `symbol`, oldest first (from the audit log)."""
    db = db or get_db()
    rows = db.query(
        "SELECT a.target FROM audit_log a JOIN models m ON m.model_id = a.target "
        "WHERE a.action IN ('deploy', 'rollback') AND m.symbol = ? AND (m.model_type = ?) = ? ORDER BY a.id",
        [symbol, DIRECTION_TYPE, int(kind == "direction")],
    )
    return [r["target"] for r in rows]


def _rollback_target(symbol: str, current_id: str, to: str | None, db: sqlite_utils.Database, kind: str = "price") -> str:
    """The archived model of `kind` deployed most recently before `current_id`, or `to` if it qualifies."""
    history = [m for m in reversed(deployment_history(symbol, db=db, kind=kind)) if m != current_id]
    eligible = [m for m in history if (row := get_model(m, db=db, missing_ok=True)) and row["status"] == "archived"]
    if to is not None:
        if to not in eligible:
            raise RegistryError(f"{to} cannot be rolled back to: it is not an archived, earlier deployed {symbol} model.")
        return to
    if not eligible:
        raise RegistryError(f"{symbol} has no earlier deployed version to roll back to.")
    return eligible[0]


def rollback_candidate(symbol: str, db: sqlite_utils.Database | None = None, kind: str = "price") -> str | None:
    """The model a rollback of `symbol`'s `kind` would go back to, or None (then "Roll back" has nothing to do)."""
    db = db or get_db()
    current = deployed_model(symbol, db=db, kind=kind)
    if current is None:
        return None
    try:
        return _rollback_target(symbol, current["model_id"], None, db, kind)
    except RegistryError:
        return None


def rollback(symbol: str, actor: str = "user", reason: str = "", db: sqlite_utils.Database | None = None,
             to: str | None = None, expected_current: str | None = None, kind: str = "price") -> dict:
    """Redeploy the version that was deployed before the current one; the current one is marked rolled_back.

    `to` names the model to go back to (the validation window goes back to the champion it replaced,
    whatever was deployed in between); `expected_current` makes it a compare-and-swap like `deploy`. `kind`: which
    of the ticker's deployed models (price or direction) is rolled back.
    The audit record and the rolled-back model's reason name both models.
    """
    db = db or get_db()
    with transaction(db):
        current = deployed_model(symbol, db=db, kind=kind)
        if current is None:
            raise RegistryError(f"No {'' if kind == 'price' else kind + ' '}model is deployed for {symbol}: nothing to roll back.")
        _check_current(symbol, current, expected_current, "nothing was rolled back", db)
        target = _rollback_target(symbol, current["model_id"], to, db, kind)
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


def archive(model_id: str, actor: str = "user", db: sqlite_utils.Database | None = None, reason: str = "") -> None:
    """Archive a model that is not deployed; `reason` (e.g. a challenger that lost its A/B test) is kept on it."""
    db = db or get_db()
    with transaction(db):
        model = get_model(model_id, db=db)
        if model["status"] == "deployed":
            raise RegistryError(f"{model_id} is deployed: deploy another version or roll back first.")
        _set_status(db, model_id, "archived")
        if reason:
            db.execute("UPDATE models SET reason = COALESCE(reason || '; ', '') || ? WHERE model_id = ?",
                       [f"archived: {reason}", model_id])
        audit(db, actor, "archive", model_id, {"symbol": model["symbol"], **({"why": reason} if reason else {})})


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
