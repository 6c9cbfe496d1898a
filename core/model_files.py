"""Model files under models/<id>/: atomic writes, sha256, saving and deserialising estimators, the loaded model.

Artifacts are written to a temporary name and renamed (atomic on POSIX). `core.registry` stores their
sha256 with the model's row, reads a file once and deserialises the bytes it verified
(`estimator_from_bytes`), so a file swapped between the check and the load can never be served.
This module touches no table.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from core.config import get_settings
from core.training import NaiveModel

# The model card, beside the artifact: `core.model_card.write_model_artifacts` writes it last, so a registered
# model whose folder has no card had its explainability artifacts interrupted (`core.retrain_jobs.reconcile`).
MODEL_CARD = "model_card.md"


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


def save_estimator(model_type: str, estimator: Any, folder: Path) -> Path:
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


def estimator_from_bytes(model_type: str, data: bytes) -> Any:
    """Deserialise an artifact from memory: the bytes whose hash was just checked, never the path again."""
    if model_type == "xgb":
        from xgboost import XGBRegressor  # lazy: heavy (2 s of a page's first visit that loads no model)

        # one thread: a served model predicts one row, where XGBoost's default pool (every core) costs ~20 ms of CPU
        # per call (~90 ms wall on a busy host) against ~3 ms single-threaded (issue 16)
        estimator = XGBRegressor(n_jobs=1)
        estimator.load_model(bytearray(data))  # XGBoost reads JSON / UBJ from a raw buffer
        return estimator
    if model_type == "naive":
        return NaiveModel()
    return joblib.load(io.BytesIO(data))


def model_folder(model_id: str) -> Path:
    return Path(get_settings().models_dir) / model_id


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
        if self.model_type == "rf":  # the type the registry recorded (estimator_from_bytes unpickled a forest)
            X32 = np.asarray(X, dtype=np.float32)
            return np.mean([tree.tree_.predict(X32)[:, 0] for tree in self.estimator.estimators_], axis=0)
        return np.asarray(self.estimator.predict(X), dtype=float)

    def predict_up(self, X: np.ndarray) -> np.ndarray:
        """P(up) of a direction model (a `CalibratedClassifierCV`): the same numbers as `predict_proba(X)[:, 1]`
        (tested), without its per-call input validation and label bookkeeping, which cost ~10 ms for one row
        against ~0.5 ms for the members' raw scores (XGBoost's `inplace_predict`, or the logistic regression's
        decision function, which is what the calibrators were fitted on) passed through their calibrators and
        averaged."""
        scores = []
        for member in self.estimator.calibrated_classifiers_:
            scores.append(member.calibrators[0].predict(_raw_score(member.estimator, X)))
        return np.clip(np.mean(scores, axis=0), 0.0, 1.0)


def _raw_score(classifier: Any, X: np.ndarray) -> np.ndarray:
    """What a calibrator of `CalibratedClassifierCV` was fitted on: XGBoost's margin-free score (`inplace_predict`),
    or a standardised logistic regression's decision function, computed from its fitted numbers (the pipeline's
    own call validates the input three times over, ~2 ms a member under load, for the same numbers)."""
    if hasattr(classifier, "get_booster"):
        return np.asarray(classifier.get_booster().inplace_predict(X), dtype=float)
    steps = getattr(classifier, "named_steps", {})
    scaler, logit = steps.get("standardscaler"), steps.get("logisticregression")
    if scaler is None or logit is None or len(steps) != 2:
        return np.asarray(classifier.decision_function(X), dtype=float)
    standardised = (np.asarray(X, dtype=float) - scaler.mean_) / scaler.scale_
    return standardised @ logit.coef_[0] + logit.intercept_[0]


def unreadable_message(model_id: str, path: Path, exc: OSError) -> str:
    """Why a model file cannot be read, in words: which file, why, and what to check (never a raw OSError)."""
    advice = "Retrain the model or restore its file from a backup; the database itself is fine."
    if isinstance(exc, FileNotFoundError):
        return f"{model_id}: the artifact {path} is missing. {advice}"
    if isinstance(exc, PermissionError):
        return (f"{model_id}: the artifact {path} cannot be read: permission denied for the user running the app "
                f"(uid {os.geteuid()}). Check the file's owner and mode (e.g. `ls -l {path}`; it needs read permission, "
                "its folders execute permission). It was not loaded; the database itself is fine.")
    return (f"{model_id}: the artifact {path} cannot be read ({exc.strerror or type(exc).__name__}"
            f"{f', errno {exc.errno}' if exc.errno else ''}). Check the disk and the file system that holds "
            f"{path.parent}; if the file is damaged, retrain the model or restore it from a backup. The database itself is fine.")
