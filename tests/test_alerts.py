"""Alerts: de-duplication, each threshold firing and not firing, acknowledgement, Slack retry, e-mail."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest
from test_monitoring import FakeReport

MODEL = {"model_id": "rf_v1_TEST_20200101", "metrics": {"skill": 0.02}}


def _metrics(days=30, mae=1.0, naive=1.0, p95=2.0, last_p95=None) -> pd.DataFrame:
    dates = pd.bdate_range("2020-01-01", periods=days)
    frame = pd.DataFrame({"date": dates, "n_predictions": 1, "mae": mae, "naive_mae": naive, "latency_p95": p95})
    if last_p95 is not None:
        frame.loc[frame.index[-1], "latency_p95"] = last_p95
    return frame


def _kinds(found) -> dict:
    return {c.kind: c.severity for c in found}


def _live(days=30, mae=1.0, naive=1.0) -> pd.DataFrame:
    """`core.metrics.live_days` rows: one scored day each, model and naive MAE in $."""
    dates = pd.bdate_range("2020-01-01", periods=days).strftime("%Y-%m-%d")
    return pd.DataFrame({"model_id": MODEL["model_id"], "symbol": "TEST", "day": dates, "n": 1, "mae": mae, "naive_mae": naive})


def test_thresholds_fire_only_above_their_limits():
    from core.alerts import conditions

    as_of = _metrics()["date"].iloc[-1]
    assert conditions(MODEL, as_of, _metrics(), None, 0.0, live=_live(mae=1.0, naive=1.0)) == []  # skill 0: drop 0.02 < 0.05
    assert _kinds(conditions(MODEL, as_of, _metrics(), None, 0.0, live=_live(mae=1.05, naive=1.0))) == {"accuracy_drop": "warning"}
    assert _kinds(conditions(MODEL, as_of, _metrics(), None, 0.0, live=_live(mae=1.5, naive=1.0))) == {"accuracy_drop": "critical"}
    assert _kinds(conditions(MODEL, as_of, _metrics(p95=5.0, last_p95=40.0), None, 0.0)) == {"latency_spike": "warning"}
    assert conditions(MODEL, as_of, _metrics(p95=5.0, last_p95=12.0), None, 0.0) == []  # 2.4x: no spike
    assert conditions(MODEL, as_of, _metrics(p95=1.0, last_p95=4.0), None, 0.0) == []  # under the floor
    assert _kinds(conditions(MODEL, as_of, _metrics(), None, 0.02)) == {"error_rate": "warning"}
    assert conditions(MODEL, as_of, _metrics(), None, 0.01) == []
    calm = FakeReport(features=pd.DataFrame({"psi": [0.24, 0.1]}, index=["a", "b"]))
    assert conditions(MODEL, as_of, _metrics(), calm, 0.0) == []
    drifting = FakeReport(True, "critical", ["PSI high"], pd.DataFrame({"psi": [0.26, 0.9]}, index=["a", "b"]))
    found = conditions(MODEL, as_of, _metrics(), drifting, 0.0)
    assert _kinds(found) == {"drift": "critical", "psi": "critical"}
    assert "2 feature(s)" in [c for c in found if c.kind == "psi"][0].message
    # too few days with actuals: accuracy is not judged
    assert conditions(MODEL, as_of, _metrics(), None, 0.0, live=_live(days=5, mae=3.0)) == []


def test_a_volatile_live_month_is_not_an_accuracy_drop():
    """Every $ error twice the validation period's (a volatile month) with the validation skill kept: no alert;
    the same $ errors with the naive forecast doing better: an alert. Judged as skill vs naive on the same days."""
    from core.alerts import conditions

    as_of = _metrics()["date"].iloc[-1]
    rng = np.random.default_rng(3)
    naive = rng.uniform(1.5, 2.5, 30) * 2  # twice the validation period's errors
    kept = _live(mae=naive * (1 - MODEL["metrics"]["skill"]) + rng.normal(0, 0.05, 30), naive=naive)
    assert conditions(MODEL, as_of, _metrics(), None, 0.0, live=kept) == []
    lost = _live(mae=naive * 1.15 + rng.normal(0, 0.05, 30), naive=naive)
    [alert] = conditions(MODEL, as_of, _metrics(), None, 0.0, live=lost)
    assert alert.kind == "accuracy_drop" and "scored days" in alert.message


def test_a_repeated_condition_raises_one_alert_per_day(fresh_db):
    from core.alerts import alerts_frame, raise_alert

    first = raise_alert("m1", "drift", "warning", "drift significant", "2024-01-02")
    assert first is not None
    assert raise_alert("m1", "drift", "warning", "still drifting", "2024-01-02") is None
    assert raise_alert("m1", "drift", "warning", "next day", "2024-01-03") is not None
    assert raise_alert("m1", "psi", "warning", "other kind", "2024-01-02") is not None
    frame = alerts_frame()
    assert len(frame) == 3 and frame["day"].min() == pd.Timestamp("2024-01-02")
    with pytest.raises(ValueError, match="severity"):
        raise_alert("m1", "drift", "urgent", "bad severity", "2024-01-02")


def test_acknowledge_once(fresh_db):
    from core.alerts import AlertError, acknowledge, alerts_frame, raise_alert

    alert_id = raise_alert("m1", "drift", "critical", "x", "2024-01-02")
    acknowledge(alert_id, actor="analyst")
    assert alerts_frame(unacknowledged_only=True).empty
    with pytest.raises(AlertError, match="already acknowledged"):
        acknowledge(alert_id)
    with pytest.raises(AlertError, match="No alert"):
        acknowledge(9999)
    assert fresh_db.execute("SELECT actor FROM audit_log WHERE action = 'acknowledge_alert'").fetchone()[0] == "analyst"


class _Webhook(BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.answers.pop(0) if self.answers else 200
        if status == 200:
            self.received.append(json.loads(body))
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture()
def webhook(monkeypatch):
    """A local Slack stand-in on 127.0.0.1 that fails the first request, then accepts."""
    _Webhook.answers, _Webhook.received = [500], []
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MLSA_OFFLINE", "0")
    monkeypatch.setenv("MLSA_SLACK_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    yield _Webhook
    server.shutdown()
    server.server_close()


def test_a_failing_slack_channel_is_retried_and_never_loses_the_alert(fresh_db, webhook):
    from core.alerts import alerts_frame, deliver_pending, pending_deliveries, raise_alert

    alert_id = raise_alert("m1", "rollback", "critical", "rolled back", "2024-01-02")  # first POST gets HTTP 500
    assert alert_id is not None and len(alerts_frame()) == 1
    assert webhook.received == []
    assert [a["id"] for a in pending_deliveries("slack")] == [alert_id]
    assert deliver_pending() == {"sent": 1, "failed": 0}  # the retry (next cycle) gets through
    assert "rolled back" in webhook.received[0]["text"] and "CRITICAL" in webhook.received[0]["text"]
    assert pending_deliveries("slack") == []
    assert deliver_pending() == {"sent": 0, "failed": 0}  # delivered once only
    actions = [r["action"] for r in fresh_db.query("SELECT action FROM audit_log WHERE target = ?", [f"alert:{alert_id}"])]
    assert actions == ["alert_delivery_failed", "alert_delivered"]


def test_delivery_gives_up_after_max_attempts(fresh_db, webhook):
    from core.alerts import MAX_DELIVERY_ATTEMPTS, deliver_pending, pending_deliveries, raise_alert

    webhook.answers = [500] * 50
    raise_alert("m1", "drift", "warning", "x", "2024-01-02")
    for _ in range(MAX_DELIVERY_ATTEMPTS + 2):
        deliver_pending()
    assert pending_deliveries("slack") == []
    assert fresh_db.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'alert_delivery_failed'").fetchone()[0] == MAX_DELIVERY_ATTEMPTS
    assert fresh_db["alerts"].count == 1


def test_email_channel_and_offline_mode(fresh_db, monkeypatch):
    from core import alerts

    sent = []

    class FakeSMTP:
        def __init__(self, host, port, timeout):
            self.host, self.port = host, port

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def starttls(self):
            sent.append("tls")

        def login(self, user, password):
            sent.append(("login", user))

        def send_message(self, message):
            sent.append(message)

    monkeypatch.setattr(alerts.smtplib, "SMTP", FakeSMTP)
    monkeypatch.setenv("MLSA_SMTP_HOST", "smtp.example.test")
    monkeypatch.setenv("MLSA_SMTP_TO", "ops@example.test")
    monkeypatch.setenv("MLSA_SMTP_USER", "bot")
    alerts.raise_alert("m1", "drift", "warning", "offline", "2024-01-02")
    assert sent == [] and alerts.configured_channels() == []  # MLSA_OFFLINE=1: no network at all
    monkeypatch.setenv("MLSA_OFFLINE", "0")
    assert alerts.configured_channels() == ["email"]
    assert alerts.deliver_pending() == {"sent": 1, "failed": 0}
    message = sent[-1]
    assert sent[:2] == ["tls", ("login", "bot")]
    assert message["To"] == "ops@example.test" and "drift" in message["Subject"]


def test_evaluate_model_reads_the_served_predictions(fresh_db):
    """The alert judges the live days of `core.metrics.live_days`: served, scored, out-of-sample predictions."""
    from core.alerts import evaluate_model

    fresh_db["models"].insert({"model_id": MODEL["model_id"], "symbol": "TEST", "model_type": "rf", "version": 1,
                               "status": "deployed", "train_end": "2019-12-31", "metrics_json": json.dumps(MODEL["metrics"])})
    days = pd.bdate_range("2020-01-01", periods=30)
    fresh_db["predictions"].insert_all([
        {"symbol": "TEST", "model_id": MODEL["model_id"], "as_of": f"{d:%Y-%m-%d}", "target_date": f"{d + pd.offsets.BDay():%Y-%m-%d}",
         "served": served, "last_close": 100.0, "actual_close": 101.0, "predicted_close": predicted}
        for d in days for served, predicted in ((1, 101.0 + 1.2), (0, 101.0))])  # the shadow rows are perfect: never counted
    as_of = f"{days[-1] + pd.offsets.BDay():%Y-%m-%d}"
    assert evaluate_model(MODEL, as_of, None, 0.0) == ["accuracy_drop"]
    assert evaluate_model(MODEL, as_of, None, 0.0) == []


@pytest.mark.parametrize("url, quoted", [
    ("hooks.slack.com/services/T000/B000/XXXXSECRETXXXX", "unknown url type: 'hooks.slack.com/services/T000/B000/XXXXSECRETXXXX'"),
    ("https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX", "URL can't contain control characters. "
                                                                  "'/services/T000/B000/XXXXSECRETXXXX' (found at least ' ')"),
    ("https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX", "token XXXXSECRETXXXX rejected"),
    ("https://bot:XXXXSECRETXXXX@hooks.example/x?key=XXXXSECRETXXXX", "auth XXXXSECRETXXXX failed"),
    ("  https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX  ", "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"),
])
def test_redact_removes_a_webhook_however_it_is_quoted(monkeypatch, url, quoted):
    from core.config import redact
    from core.alerts import delivery_error

    monkeypatch.setenv("MLSA_SLACK_WEBHOOK_URL", url)
    monkeypatch.setenv("MLSA_SMTP_PASSWORD", "hunter2-pw")
    assert "XXXXSECRETXXXX" not in redact(quoted) and "***" in redact(quoted)
    assert "hunter2-pw" not in redact("535 login hunter2-pw refused")
    assert "XXXXSECRETXXXX" not in delivery_error(ValueError(quoted))
    assert redact("nothing secret here") == "nothing secret here"


def test_settings_table_masks_every_secret(monkeypatch):
    from core.config import SECRET_FIELDS, settings_table

    monkeypatch.setenv("MLSA_SLACK_WEBHOOK_URL", "https://hooks.example/secret-path")
    monkeypatch.setenv("MLSA_SMTP_PASSWORD", "pw")
    rows = {r["setting"]: r["value"] for r in settings_table()}
    assert all(rows[name] == "(set)" for name in SECRET_FIELDS)
