"""Secrets and storage messages under hostile settings, with real deliveries, processes and files (issue 10 §3).

- A malformed webhook URL (one `urlsplit` refuses, a non-numeric port) never makes `redact` raise, so the
  error paths it sits in (pages, the scheduler, alert delivery) keep working, and no piece of the URL
  (netloc, host, port, userinfo, path, query, fragment) reaches the database file, the logs or a page.
  Deliveries really fail: MLSA_OFFLINE=0 with loopback closed ports or URLs that do not parse (no network).
- The busy message is one line whatever the holder's command line holds, and never shows a secret on it.
- Read-only advice names every file to fix (SQLite creates -wal and -shm with the database's mode), and
  following it exactly makes the database writable again.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import page_app
from core import alerts
from core.config import MASK, redact
from test_faults_storage import (PY, ROOT, write_while_held, _advice_is_safe, _closed_smtp, _env, _new_db, _one_line, _page_text, _scheduler,
                                 _without_dac_override, _write_as_user, holding)

MALFORMED = [
    "http://[SECRET123/services",  # urlsplit: Invalid IPv6 URL
    "https://hooks.slack.com:SECRET123/services/x",  # http.client: nonnumeric port: 'SECRET123'
    "http://[::1]:SECRET123/p",
    "http://us%zz:SECRET123@[x/y?z#w",
    "SECRET123",
    ":/?#[]@SECRET123",
    "http://h/SECRET123\x01\n'\"\\",  # control characters and quotes: repr escapes them
    "http://h:1/?token=SECRET123&x=%ff",
]


@pytest.mark.parametrize("url", MALFORMED)
def test_redact_never_raises_and_masks_every_quoted_piece(url, monkeypatch):
    monkeypatch.setenv("MLSA_SLACK_WEBHOOK_URL", url)
    quoted = [url, repr(url), "nonnumeric port: 'SECRET123'", "SECRET123", url.replace("SECRET123", "SECRET123 ")]
    for text in quoted:
        assert "SECRET123" not in redact(f"Error: {text} (while delivering)")
    assert redact("nothing secret here") == "nothing secret here"


def test_redact_works_when_another_setting_does_not_parse(monkeypatch):
    monkeypatch.setenv("MLSA_SLACK_WEBHOOK_URL", "http://[SECRET123/services")
    monkeypatch.setenv("MLSA_SMTP_PORT", "not-a-port")  # get_settings() raises: redaction must not
    assert redact("failed: http://[SECRET123/services and SECRET123") == f"failed: {MASK} and {MASK}"


def test_a_short_piece_does_not_mangle_ordinary_words(monkeypatch):
    monkeypatch.setenv("MLSA_SLACK_WEBHOOK_URL", "http://user:pw-123456@127.0.0.1:80/x?id=1")
    text = redact("the user running the app got 80 x 1 id from http://user:pw-123456@127.0.0.1:80/x?id=1 (pw-123456)")
    assert text == f"the user running the app got 80 x 1 id from {MASK} ({MASK})"


# --- real deliveries --------------------------------------------------------------------------------------

def _webhooks(port: int) -> dict[str, str]:
    """Secret -> a webhook URL that fails for real without the network, the secret in another piece each time."""
    return {
        "IPV6SECRET123": "http://[IPV6SECRET123/services/T000",  # urlsplit refuses it: the probe's crash
        "PORTSECRET123": "https://hooks.slack.com:PORTSECRET123/services/x",  # InvalidURL quotes the port
        "LOOPPORTSECRET": "http://127.0.0.1:LOOPPORTSECRET/services/x",
        "USERSECRET123": f"http://USERSECRET123:PASSSECRET123@127.0.0.1:{port}/hook",  # connection refused
        "PATHSECRET123": f"http://127.0.0.1:{port}/services/T0/PATHSECRET123 x",  # a space: the path is quoted
        "QUERYSECRET123": f"http://127.0.0.1:{port}/hook?token=QUERYSECRET123",
        "FRAGSECRET123": f"http://127.0.0.1:{port}/hook#FRAGSECRET123",
        "HOSTSECRET123": "http://HOSTSECRET123.invalid:bad/services",
    }


def _assert_nowhere(secrets, db_path: Path, *texts: str) -> None:
    files = [p for p in db_path.parent.glob(db_path.name + "*") if p.is_file()]
    stored = b"".join(p.read_bytes() for p in files)
    for secret in secrets:
        assert secret.encode() not in stored, f"{secret} reached the database file"
        for text in texts:
            assert secret not in text, f"{secret} reached {text[:200]!r}"


def test_failed_deliveries_with_malformed_urls_are_recorded_redacted_and_never_stop_delivery(fresh_db, monkeypatch,
                                                                                            caplog):
    port = _closed_smtp(monkeypatch, "SMTPSECRET123")
    caplog.set_level(logging.DEBUG)
    webhooks = _webhooks(port)
    for day, url in enumerate(webhooks.values(), start=1):
        monkeypatch.setenv("MLSA_SLACK_WEBHOOK_URL", url)
        alerts.raise_alert("m1", "drift", "critical", f"check {day}", f"2024-01-{day:02d}")
        alerts.deliver_pending()  # must not raise, whatever the URL
    errors = [json.loads(r[0])["error"] for r in fresh_db.execute(
        "SELECT details_json FROM audit_log WHERE action = 'alert_delivery_failed'").fetchall()]
    assert len(errors) >= 2 * len(webhooks), errors  # every attempt really failed and was recorded, both channels
    assert any("Invalid IPv6 URL" in e for e in errors) and any("nonnumeric port: '***'" in e for e in errors)
    assert any("Connection refused" in e for e in errors)

    monkeypatch.setenv("MLSA_OFFLINE", "1")
    pages = [page_app().run(), page_app("pages/6_Monitoring.py").run()]
    assert not any(p.exception for p in pages)
    assert f"check {len(webhooks)}" in _page_text(pages[0])
    secrets = [*webhooks, "PASSSECRET123", "SMTPSECRET123"]
    _assert_nowhere(secrets, Path(os.environ["MLSA_DB_PATH"]), caplog.text, *map(_page_text, pages), *errors)
    assert MASK in caplog.text


def test_a_malformed_webhook_does_not_break_the_messages_of_a_busy_database(tmp_path, monkeypatch):
    """The probe's crash: redact raised inside every error path. Now the scheduler exits 4 with one line
    and Home shows the busy message, the URL's pieces masked in both."""
    import scheduled_tasks

    url = "http://[SECRET123/services"
    path = _new_db(tmp_path / "app.db")
    monkeypatch.setenv("MLSA_DB_PATH", str(path))
    monkeypatch.setenv("MLSA_SLACK_WEBHOOK_URL", url)
    monkeypatch.setenv("MLSA_PAGE_BUSY_TIMEOUT", "1")
    with holding(path, journal="delete") as holder:
        done = _scheduler("--once", MLSA_DB_PATH=str(path), MLSA_DB_BUSY_TIMEOUT="1", MLSA_SLACK_WEBHOOK_URL=url)
        home = page_app().run()
    assert done.returncode == scheduled_tasks.EXIT_DB_UNAVAILABLE, done.stderr[-3000:]
    assert f"pid {holder.pid}" in _one_line(done.stderr, "database unavailable:")
    assert not home.exception and len(home.error) == 1 and f"pid {holder.pid}" in home.error[0].value
    _assert_nowhere(["SECRET123"], path, done.stdout, done.stderr, home.error[0].value)


# --- the busy message ---------------------------------------------------------------------------------------

def test_the_busy_message_is_one_line_and_hides_a_secret_on_the_holders_command_line(tmp_path, monkeypatch):
    secret_url = "https://hooks.slack.com/services/T000/B000/CMDSECRET123"
    monkeypatch.setenv("MLSA_SLACK_WEBHOOK_URL", secret_url)
    monkeypatch.setenv("MLSA_DB_BUSY_TIMEOUT", "1")
    path = _new_db(tmp_path / "app.db")
    code = textwrap.dedent(f"""
        import sqlite3, sys, time
        conn = sqlite3.connect({str(path)!r}, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("CREATE TABLE holder_probe (x)")
        print("held", flush=True)
        time.sleep(300)
    """)
    holder = subprocess.Popen([PY, "-c", code, "--note\nline two\tthree\x1b[31m", f"--hook={secret_url}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    message = str(write_while_held(holder, path))
    assert f"pid {holder.pid} (python -c import sqlite3, sys, time conn = " in message, message
    assert not re.search(r"[\x00-\x1f\x7f]", message), repr(message)
    assert "CMDSECRET123" not in message and "hooks.slack.com" not in message
    _advice_is_safe(message)


# --- read-only advice --------------------------------------------------------------------------------------

def test_read_only_advice_names_every_file_and_following_it_makes_the_database_writable(tmp_path):
    path = _new_db(tmp_path / "app.db")
    path.chmod(0o444)
    kind, message = _write_as_user(path)  # SQLite creates -wal and -shm with the database's mode (0444)
    assert kind == "DatabaseReadOnly", message
    family = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    assert all(p.exists() and not p.stat().st_mode & 0o222 for p in family), [oct(p.stat().st_mode) for p in family]
    assert f"the file {path} is read-only (-r--r--r--)" in message
    assert f"and so are {path}-wal (-r--r--r--) and {path}-shm (-r--r--r--)" in message
    advised = re.search(r"\(chmod u\+w ([^,]+), or chown them", message)
    assert advised and advised.group(1).split() == [str(p) for p in family], message
    assert "pages can still show" not in message and "nothing can be saved until this is fixed" in message
    _advice_is_safe(message)

    subprocess.run(["chmod", "u+w", *advised.group(1).split()], check=True)  # exactly what the message says
    kind, message = _write_as_user(path)
    assert kind == "WROTE", message


def test_the_read_only_folder_message_matches_what_home_shows(tmp_path):
    folder = tmp_path / "data"
    path = _new_db(folder / "app.db")
    probe = ("from streamlit.testing.v1 import AppTest\nimport json\n"
             "at = AppTest.from_file('Home.py', default_timeout=120).run()\n"
             "print(json.dumps({'exception': [str(e.value) for e in at.exception], 'error': [e.value for e in at.error],"
             " 'metric': len(at.metric), 'dataframe': len(at.dataframe)}))")
    folder.chmod(0o555)
    try:
        done = subprocess.run(_without_dac_override([PY, "-c", probe]), cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env=_env(MLSA_DB_PATH=str(path)))
    finally:
        folder.chmod(0o755)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["exception"] == [] and len(seen["error"]) == 1, seen
    message = seen["error"][0]
    assert f"the folder {folder} is read-only" in message and f"chmod u+w {folder}" in message
    # Home shows only the error: the message must not promise that pages still show what is stored
    assert seen["metric"] == 0 and seen["dataframe"] == 0
    assert "can still show" not in message and "before it can read or write it, so no page can show what is stored" in message
    _advice_is_safe(message)
