"""The registered window, stored beside the model: what the Explainability page opens on without computing.

At registration `core.model_card` explains the model's window (`core.explain.explain_window`) and
stores it here as `SHAP_WINDOW` (rows, SHAP values, calibrated P(up), each feature's dependence
partner) beside `IMPORTANCE_JSON`. Reading them needs numpy and json only: no model, no SHAP, no
sklearn / xgboost / shap import, so a first visit after a server start stays fast (issue #16).
A file written for another artifact (a model id reused by another registry) is ignored.
"""
from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import sqlite_utils

from core.explain import IMPORTANCE_JSON, SHAP_WINDOW, Explanation, ShapValues, interaction_partner
from core.model_files import atomic_write, model_folder
from core.registry import get_model

log = logging.getLogger(__name__)


def save_window(explanation: Explanation, artifact_sha256: str, path: Path) -> None:
    """Store the explained rows, their SHAP values, calibrated P(up) and each feature's dependence partner."""
    frame = explanation.frame
    names = explanation.shap.feature_names
    partners = [interaction_partner(explanation.shap, explanation.X, name) for name in names]
    arrays = dict(values=explanation.shap.values, base_value=explanation.shap.base_value, output=explanation.shap.output,
                  frame=frame.to_numpy(dtype=float), columns=np.array(frame.columns, dtype=str),
                  dates=frame.index.to_numpy(dtype="datetime64[ns]"), features=np.array(names, dtype=str),
                  partners=np.array(partners, dtype=str), artifact_sha256=np.array(artifact_sha256),
                  model_type=np.array(explanation.model_type))
    if explanation.calibrated is not None:
        arrays["calibrated"] = explanation.calibrated
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def stored_stamp(model_id: str) -> tuple[int, int]:
    """The stored window's and importance file's mtimes (ns; 0 when missing): a page cache key that changes when
    Model Management rewrites them, so a page never keeps showing "not stored" for files written since."""
    paths = (model_folder(model_id) / SHAP_WINDOW, model_folder(model_id) / IMPORTANCE_JSON)
    return tuple(path.stat().st_mtime_ns if path.exists() else 0 for path in paths)


def stored_explanation(model_id: str, db: sqlite_utils.Database | None = None) -> Explanation | None:
    """The window explained at registration, read from `SHAP_WINDOW` (no model, no SHAP, no heavy import),
    or None when it is missing, unreadable or written for another artifact."""
    row = get_model(model_id, db=db)
    path = model_folder(model_id) / SHAP_WINDOW
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            if str(data["artifact_sha256"]) != row["artifact_sha256"]:
                return None
            names = [str(n) for n in data["features"]]
            frame = pd.DataFrame(data["frame"], columns=[str(c) for c in data["columns"]],
                                 index=pd.DatetimeIndex(data["dates"], name=None))
            result = ShapValues(values=data["values"], base_value=float(data["base_value"]), feature_names=names,
                                output=data["output"])
            calibrated = data["calibrated"] if "calibrated" in data.files else None
            partners = dict(zip(names, (str(p) for p in data["partners"])))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # truncated or damaged: compute instead
        log.warning("ignoring an unreadable stored SHAP window %s: %s", path, exc)
        return None
    return Explanation(model_id=model_id, model_type=row["model_type"], shap=result, frame=frame, calibrated=calibrated,
                       partners=partners)


def stored_importance(model_id: str, db: sqlite_utils.Database | None = None) -> dict | None:
    """The importance document written at registration (`IMPORTANCE_JSON`) if it is this artifact's, else None."""
    try:
        document = json.loads((model_folder(model_id) / IMPORTANCE_JSON).read_text())
    except (OSError, ValueError):
        return None
    return document if document.get("artifact_sha256") == get_model(model_id, db=db)["artifact_sha256"] else None
