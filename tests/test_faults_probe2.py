"""Faults found by the second probe (issue 10 §2-3), each made for real: a model file chmod 000 read by a
process without CAP_DAC_OVERRIDE, a tampered A/B arm, a second process deploying between a confirmation
and its Confirm, a retrain SIGKILLed while writing its challenger's artifacts, the daily cycle on the
first days after training and inside a training window, and a browser that ignores SIGTERM.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from test_evidence import _break_artifact, _day_routed_to, _models
from test_faults_lifecycle import (NEAR_PERFECT, TIMEOUT, _kill, _last_day, _spawn, _wait_for_line,
                                   assert_consistent)
from test_faults_storage import _without_dac_override

ROOT = Path(__file__).resolve().parent.parent
SEPTEMBER = [f"2012-09-{d:02d}" for d in (4, 5, 6, 7, 10, 11, 12, 13, 14)]


def _artifact(model_id: str) -> Path:
    from core.config import get_settings
    from core.registry import get_model

    return Path(get_settings().models_dir) / get_model(model_id)["artifact_path"]


# --- 1. an unreadable model file is a ModelIntegrityError in words; a broken arm falls back -------------

UNREADABLE_CHILD = r'''
import sys
from core.registry import ModelIntegrityError, load_model
from core.predict import predict
try:
    load_model(sys.argv[1])
    print("LOADED")
except ModelIntegrityError as exc:
    print("INTEGRITY", exc)
served = predict("MSFT", sys.argv[2])  # routed to the unreadable arm B
print("SERVED", served.model_id, served.experiment_id, served.arm, served.prediction_id)
'''


def test_an_unreadable_model_file_is_named_and_a_broken_arm_falls_back(registry_copy, tmp_path):
    from core.abtest import create_experiment

    champion, other = _models("MSFT")
    experiment_id = create_experiment("unreadable arm", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-09-04",
                                      duration_days=30)
    path = _artifact(other)
    path.chmod(0)
    day = _day_routed_to(experiment_id, 1, SEPTEMBER)
    try:
        child = subprocess.run(_without_dac_override([sys.executable, "-c", UNREADABLE_CHILD, other, day]),
                               cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=TIMEOUT)
    finally:
        path.chmod(0o644)
    assert child.returncode == 0, child.stderr[-3000:]
    assert "PermissionError" not in child.stdout + child.stderr
    integrity = next(line for line in child.stdout.splitlines() if line.startswith("INTEGRITY"))
    assert str(path) in integrity and "permission denied" in integrity and "ls -l" in integrity, integrity
    served = next(line for line in child.stdout.splitlines() if line.startswith("SERVED")).split()
    assert served[1:4] == [champion, "None", "None"]  # the deployed model answered, outside the test
    alert = registry_copy.execute("SELECT message FROM alerts WHERE model_id = ? AND kind = 'experiment_arm_broken'",
                                  [other]).fetchone()
    assert alert and "permission denied" in alert[0]


def test_a_missing_model_folder_permission_is_an_integrity_error_too(registry_copy):
    """stat() fails on a folder without execute permission: also in words, never a raw OSError."""
    from core.registry import load_model

    champion, _other = _models("MSFT")
    folder = _artifact(champion).parent
    folder.chmod(0o600)  # no search permission: stat of the file inside fails with EACCES
    code = textwrap.dedent(f"""
        from core.registry import ModelIntegrityError, load_model
        try:
            load_model({champion!r})
        except ModelIntegrityError as exc:
            print("INTEGRITY", exc)
    """)
    try:
        child = subprocess.run(_without_dac_override([sys.executable, "-c", code]), cwd=ROOT, env=os.environ.copy(),
                               capture_output=True, text=True, timeout=TIMEOUT)
    finally:
        folder.chmod(0o755)
    assert child.stdout.startswith("INTEGRITY") and "permission denied" in child.stdout, child.stderr[-3000:]
    load_model(champion)  # readable again: loads
