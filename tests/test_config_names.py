"""Conventional environment names beside the MLSA_* ones: each sets its setting, MLSA_* wins when both are
set, the startup log line names the variable used (never a value), and a secret set under its conventional
name is still redacted."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import CONVENTIONAL_NAMES, get_settings, log_setting_names, redact, setting_names_line, settings_table

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK = "https://hooks.slack.com/services/T0CONV/B0CONV/conventionalSecretToken42"
# conventional name -> (settings field, a value to set, what the field then holds)
CASES = {
    "DRIFT_PSI_THRESHOLD": ("drift_psi_threshold", "0.31", 0.31),
    "DRIFT_PERF_THRESHOLD": ("drift_perf_threshold", "0.4", 0.4),
    "AB_MIN_SAMPLES": ("ab_min_samples", "12", 12),
    "AB_CONFIDENCE_LEVEL": ("ab_confidence_level", "0.9", 0.9),
    "AB_DEFAULT_DURATION_DAYS": ("ab_default_duration_days", "45", 45),
    "ALERT_EMAIL": ("smtp_to", "desk@example.com", "desk@example.com"),
    "ALERT_SLACK_WEBHOOK": ("slack_webhook_url", WEBHOOK, WEBHOOK),
    "DRIFT_CHECK_FREQUENCY": ("drift_check_time", "07:30", "07:30"),
}


@pytest.fixture()
def clean_env(monkeypatch):
    """No MLSA_* or conventional name of the aliased settings set (the test process may have some)."""
    for key, conventional in CONVENTIONAL_NAMES.items():
        monkeypatch.delenv(f"MLSA_{key}", raising=False)
        monkeypatch.delenv(conventional, raising=False)
    return monkeypatch


def test_every_conventional_name_is_mapped_and_tested():
    assert sorted(CONVENTIONAL_NAMES.values()) == sorted(CASES)


@pytest.mark.parametrize("conventional", sorted(CASES))
def test_the_conventional_name_sets_the_setting(clean_env, conventional):
    field, raw, expected = CASES[conventional]
    default = getattr(get_settings(), field)
    assert default != expected
    clean_env.setenv(conventional, raw)
    assert getattr(get_settings(), field) == expected


@pytest.mark.parametrize("conventional", sorted(CASES))
def test_the_mlsa_name_wins_when_both_are_set(clean_env, conventional):
    field, raw, expected = CASES[conventional]
    key = next(k for k, v in CONVENTIONAL_NAMES.items() if v == conventional)
    default = getattr(get_settings(), field)
    clean_env.setenv(conventional, raw)
    clean_env.setenv(f"MLSA_{key}", str(default))
    assert getattr(get_settings(), field) == default
    assert f"{key.lower()} from MLSA_{key} ({conventional} also set, ignored)" in setting_names_line()


def test_defaults_are_unchanged_and_the_new_duration_setting(clean_env):
    settings = get_settings()
    assert (settings.drift_psi_threshold, settings.drift_perf_threshold, settings.ab_min_samples,
            settings.ab_confidence_level, settings.ab_default_duration_days, settings.drift_check_time) == (0.25, 0.20, 30, 0.95, 30, "06:00")
    clean_env.setenv("MLSA_AB_DEFAULT_DURATION_DAYS", "14")
    assert get_settings().ab_default_duration_days == 14
    assert all(part.endswith("from default") for part in setting_names_line().removeprefix("settings: ").split("; ")
               if not part.startswith("ab_default_duration_days"))


def test_drift_check_frequency_is_daily_or_a_time(clean_env):
    clean_env.setenv("DRIFT_CHECK_FREQUENCY", "daily")
    assert get_settings().drift_check_time == "06:00"
    clean_env.setenv("DRIFT_CHECK_FREQUENCY", "hourly")
    with pytest.raises(ValueError, match="DRIFT_CHECK_FREQUENCY='hourly'.*once per trading day"):
        get_settings()
    clean_env.setenv("MLSA_DRIFT_CHECK_TIME", "05:00")  # the MLSA_* name wins: the bad alias is not read at all
    assert get_settings().drift_check_time == "05:00"


def test_the_log_line_names_the_variable_never_the_secret(clean_env, caplog):
    clean_env.setenv("ALERT_SLACK_WEBHOOK", WEBHOOK)
    clean_env.setenv("AB_MIN_SAMPLES", "12")
    with caplog.at_level(logging.INFO, logger="core.config"):
        line = log_setting_names()
    assert caplog.messages == [line]
    assert "slack_webhook_url from ALERT_SLACK_WEBHOOK" in line and "ab_min_samples from AB_MIN_SAMPLES" in line
    assert "drift_psi_threshold from default" in line
    assert "conventionalSecretToken42" not in line and "hooks.slack.com" not in line and "12" not in line


def test_a_secret_under_its_conventional_name_is_redacted(clean_env):
    clean_env.setenv("ALERT_SLACK_WEBHOOK", WEBHOOK)
    assert "conventionalSecretToken42" not in redact(f"<urlopen error POST {WEBHOOK} failed>")
    assert "conventionalSecretToken42" not in redact("HTTP 404 for /services/T0CONV/B0CONV/conventionalSecretToken42")
    assert {r["setting"]: r["value"] for r in settings_table()}["slack_webhook_url"] == "(set)"
    clean_env.setenv("MLSA_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T1/B1/theWinningToken77")
    assert "conventionalSecretToken42" not in redact(f"echo {WEBHOOK}")  # ignored, yet still a secret
    clean_env.setenv("MLSA_SMTP_PORT", "not-a-port")  # settings do not parse: redaction falls back to the raw variables
    assert "conventionalSecretToken42" not in redact(f"echo {WEBHOOK}")


def test_the_scheduler_logs_the_names_at_startup(tmp_path):
    """A real `scheduled_tasks.py --once` process on an empty registry: its log names each variable used."""
    env = {k: v for k, v in os.environ.items() if k not in CONVENTIONAL_NAMES.values() and not k.startswith("MLSA_")}
    env.update({"MLSA_OFFLINE": "1", "MLSA_DB_PATH": str(tmp_path / "app.db"), "MLSA_MODELS_DIR": str(tmp_path / "models"),
                "ALERT_SLACK_WEBHOOK": WEBHOOK, "AB_MIN_SAMPLES": "12", "MLSA_AB_MIN_SAMPLES": "40",
                "DRIFT_CHECK_FREQUENCY": "daily"})
    done = subprocess.run([sys.executable, str(ROOT / "scheduled_tasks.py"), "--once"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "settings: " in line]
    assert len(lines) == 1
    assert "slack_webhook_url from ALERT_SLACK_WEBHOOK" in lines[0]
    assert "ab_min_samples from MLSA_AB_MIN_SAMPLES (AB_MIN_SAMPLES also set, ignored)" in lines[0]
    assert "drift_check_time from DRIFT_CHECK_FREQUENCY" in lines[0]
    assert "conventionalSecretToken42" not in done.stdout + done.stderr
