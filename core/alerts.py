"""Alerts: owns the `alerts` table; de-duplicated alerts with severity, acknowledgement, Slack and e-mail delivery.

An alert's `dedup_key` is (model, kind, day), unique in the table, so a condition that holds all day
(or a cycle run twice) raises one alert. Every alert is in-app at once; Slack (incoming webhook,
`MLSA_SLACK_WEBHOOK_URL`) and e-mail (`MLSA_SMTP_HOST` + `MLSA_SMTP_TO`) are optional channels. A
delivery is recorded in `audit_log` (action `alert_delivered` / `alert_delivery_failed`, target
`alert:<id>`), so a failing channel is logged, never fatal, and retried by the next cycle up to
`MAX_DELIVERY_ATTEMPTS` times; the alert itself is never lost. A delivery error is passed through
`core.config.redact` before it is logged or stored: urllib quotes a malformed webhook URL whole, and
the URL is the secret.

Thresholds (the project's seeds): accuracy drop > 5 points of live skill (1 - MAE/MAE_naive, the one
definition of `core.metrics`: the model's last 30 scored, served, out-of-sample days) below the model's
validation skill, and credibly below it (`core.metrics.skill_drop`: skill vs naive on the same days, so
a volatile month that makes every forecast's $ error larger is not a degradation), feature PSI > `MLSA_DRIFT_PSI_THRESHOLD` (0.25), latency P95 > 3x its
median of the previous 20 days, error rate (failed cycle steps) > 1%.
"""
from __future__ import annotations

import json
import logging
import smtplib
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage

import pandas as pd
import sqlite_utils

from core.config import Settings, get_settings, redact
from core.metrics import SKILL_DROP, live_days, metrics_frame, skill_drop
from core.store import audit, get_db, transaction, utc_now, where_clause

log = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "critical")
DRIFT_SEVERITY = {"moderate": "info", "significant": "warning", "critical": "critical"}
LATENCY_SPIKE_FACTOR = 3.0
LATENCY_BASELINE_DAYS = 20
LATENCY_MIN_BASELINE = 5
LATENCY_FLOOR_MS = 10.0  # a spike from 1 ms to 4 ms is jitter, not an incident
ERROR_RATE_LIMIT = 0.01
MAX_DELIVERY_ATTEMPTS = 5
CHANNEL_TIMEOUT_S = 5.0


class AlertError(ValueError):
    """An alert operation that cannot be done as asked (unknown alert, bad severity...)."""


@dataclass(frozen=True)
class Condition:
    """A condition that holds on a day and should raise one alert."""

    kind: str
    severity: str
    message: str
    day: str | None = None  # hook (issue 13): the day it is keyed on instead of as_of (a change's onset)
    detail: str | None = None  # hook (issue 13): part of the dedup key (the detector)


def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


def dedup_key(model_id: str, kind: str, as_of, detail: str | None = None) -> str:
    return f"{model_id}|{kind}|{_day(as_of)}" if detail is None else f"{model_id}|{kind}|{detail}|{_day(as_of)}"


# --- raise / read / acknowledge ------------------------------------------------------------------------

def raise_alert(model_id: str, kind: str, severity: str, message: str, as_of,
                db: sqlite_utils.Database | None = None, deliver: bool = True, detail: str | None = None) -> int | None:
    """Store an alert unless the same (model, kind, day) exists; returns its id, or None for a duplicate."""
    if severity not in SEVERITIES:
        raise AlertError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}.")
    db = db or get_db()
    key = dedup_key(model_id, kind, as_of, detail)
    with transaction(db):
        if db.execute("SELECT 1 FROM alerts WHERE dedup_key = ?", [key]).fetchone():
            return None
        alert_id = db["alerts"].insert({
            "dedup_key": key, "model_id": model_id, "kind": kind, "severity": severity, "message": message,
            "created_at": utc_now(), "acknowledged_at": None,
        }).last_pk
        audit(db, "alerts", "alert", model_id, {"alert_id": alert_id, "kind": kind, "severity": severity,
                                                "as_of": _day(as_of)})
    log.log(logging.WARNING if severity != "info" else logging.INFO, "alert %s %s %s: %s", severity, model_id, kind, message)
    if deliver:
        try:
            deliver_pending(db=db, alert_ids=[alert_id])
        except Exception as exc:  # delivery is never fatal: the next cycle retries
            log.warning("alert %s delivery failed: %s", alert_id, delivery_error(exc))
    return alert_id


def acknowledge(alert_id: int, actor: str = "ui", db: sqlite_utils.Database | None = None) -> None:
    db = db or get_db()
    with transaction(db):
        row = db.execute("SELECT model_id, acknowledged_at FROM alerts WHERE id = ?", [alert_id]).fetchone()
        if row is None:
            raise AlertError(f"No alert with id {alert_id}.")
        if row[1]:
            raise AlertError(f"Alert {alert_id} was already acknowledged at {row[1][:16].replace('T', ' ')}.")
        db.execute("UPDATE alerts SET acknowledged_at = ? WHERE id = ?", [utc_now(), alert_id])
        audit(db, actor, "acknowledge_alert", row[0], {"alert_id": alert_id})


def alerts_frame(symbol: str | None = None, model_id: str | None = None, unacknowledged_only: bool = False,
                 limit: int = 1000, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Alerts newest first with their day (from the dedup key) and ticker."""
    db = db or get_db()
    where, params = where_clause(("m.symbol = ?", symbol), ("a.model_id = ?", model_id),
                                 ("a.acknowledged_at IS NULL", unacknowledged_only))
    frame = pd.read_sql_query(
        "SELECT a.id, a.dedup_key, a.model_id, m.symbol, a.kind, a.severity, a.message, a.created_at, "
        f"a.acknowledged_at FROM alerts a LEFT JOIN models m ON m.model_id = a.model_id {where} "
        "ORDER BY a.id DESC LIMIT ?", db.conn, params=[*params, limit],
    )
    frame.insert(1, "day", pd.to_datetime(frame["dedup_key"].str.rsplit("|", n=1).str[-1]))
    return frame.drop(columns="dedup_key")


# --- conditions ---------------------------------------------------------------------------------------

def conditions(model: dict, as_of, metrics: pd.DataFrame, report, error_rate: float,
               settings: Settings | None = None, live: pd.DataFrame | None = None) -> list[Condition]:
    """The alert conditions that hold for `model` on `as_of`, from its daily metrics, live days and drift report.

    `metrics` is the model's `daily_metrics` rows up to `as_of` (oldest first, for latency); `live` its
    `core.metrics.live_days` rows on `as_of` (the scored days live skill is judged on); `report` a drift
    report or None. Pure: no database, so each threshold is tested directly.
    """
    settings = settings or get_settings()
    found: list[Condition] = []
    if live is not None:
        drop = skill_drop(live, model.get("metrics", {}).get("skill"))
        if drop["degraded"]:
            found.append(Condition("accuracy_drop", drop["severity"], skill_drop_message(drop)))
    latency = metrics.dropna(subset=["latency_p95"])
    if len(latency) > LATENCY_MIN_BASELINE:
        latest = latency.iloc[-1]
        recent = (pd.Timestamp(as_of) - pd.Timestamp(latest["date"])).days <= 4
        baseline = float(latency["latency_p95"].iloc[-LATENCY_BASELINE_DAYS - 1:-1].median())
        p95 = float(latest["latency_p95"])
        if recent and p95 > LATENCY_SPIKE_FACTOR * baseline and p95 > LATENCY_FLOOR_MS:
            found.append(Condition("latency_spike", "critical" if p95 > settings.cert_max_latency_p95_ms else "warning",
                                   f"Latency P95 {p95:.1f} ms on {_day(latest['date'])}, {p95 / baseline:.1f}x the "
                                   f"median {baseline:.1f} ms of the previous days."))
    if error_rate > ERROR_RATE_LIMIT:
        found.append(Condition("error_rate", "warning",
                               f"{error_rate:.1%} of daily-cycle steps failed over the recent runs (limit {ERROR_RATE_LIMIT:.0%})."))
    if report is not None:
        if report.overall_drift and report.severity in DRIFT_SEVERITY:
            found.append(Condition("drift", DRIFT_SEVERITY[report.severity],
                                   f"Drift {report.severity}: " + "; ".join(report.reasons[:3])))
        features = getattr(report, "features", None)
        if features is not None and len(features) and "psi" in features:
            named = features.set_index("feature") if "feature" in features else features
            psi = named["psi"].astype(float)
            # only features the drift module judged drifted: raw PSI > 0.25 is routine for rolling daily
            # features in calm months, and the verdict is what controls false alarms (core/drift.py)
            drifted = named["verdict"].eq("drift") if "verdict" in named else pd.Series(True, index=named.index)
            over = psi[(psi > settings.drift_psi_threshold) & drifted].sort_values(ascending=False)
            if len(over):
                top = ", ".join(f"{name} {value:.2f}" for name, value in over.head(3).items())
                found.append(Condition("psi", "critical" if report.severity == "critical" else "warning",
                                       f"{len(over)} feature(s) with PSI > {settings.drift_psi_threshold}: {top}."))
        for alarm in getattr(report, "sequential", None) or []:  # hook (issue 13): one alert per (detector, onset)
            found.append(Condition("sequential_drift", "warning", f"Sequential alarm on {alarm['alarm_day']}: "
                                   f"{alarm['reason']}.", day=alarm["onset_day"], detail=alarm["detector"]))
    return found


def skill_drop_message(drop: dict) -> str:
    """The accuracy alert's words: live vs validation skill, the drop and its evidence (`core.metrics.skill_drop`)."""
    return (f"Live skill {drop['live_skill']:+.3f} over {drop['days']} scored days vs validation {drop['validation_skill']:+.3f} "
            f"(drop {drop['drop']:.3f} > {SKILL_DROP}, one-sided p = {drop['p_value']:.3f}).")


def evaluate_model(model: dict, as_of, report, error_rate: float, db: sqlite_utils.Database | None = None) -> list[str]:
    """Raise the alerts whose conditions hold today; returns the kinds newly raised (duplicates skipped)."""
    db = db or get_db()
    start = pd.Timestamp(as_of) - pd.Timedelta(days=120)
    metrics = metrics_frame(model_id=model["model_id"], start=start, end=as_of, db=db)
    live = live_days([model["model_id"]], as_of, db=db)
    raised = []
    for condition in conditions(model, as_of, metrics, report, error_rate, live=live):
        if raise_alert(model["model_id"], condition.kind, condition.severity, condition.message, condition.day or as_of,
                       db=db, detail=condition.detail) is not None:
            raised.append(condition.kind)
    return raised


# --- channels -----------------------------------------------------------------------------------------

def _text(alert: dict) -> str:
    return f"[{alert['severity'].upper()}] {alert['model_id']} {alert['kind']}: {alert['message']}"


def send_slack(alert: dict, settings: Settings) -> None:
    """POST the alert to the Slack incoming webhook; raises on a non-2xx answer or a network error."""
    body = json.dumps({"text": f"ML Stock Agent {_text(alert)}"}).encode()
    request = urllib.request.Request(settings.slack_webhook_url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=CHANNEL_TIMEOUT_S) as response:
        if not 200 <= response.status < 300:
            raise OSError(f"Slack answered HTTP {response.status}")


def send_email(alert: dict, settings: Settings) -> None:
    """Send the alert by SMTP (STARTTLS and login when a user is set)."""
    message = EmailMessage()
    message["Subject"] = f"ML Stock Agent alert: {alert['kind']} ({alert['severity']}) on {alert['model_id']}"
    message["From"] = settings.smtp_from or settings.smtp_user or "ml-stock-agent@localhost"
    message["To"] = settings.smtp_to
    message.set_content(_text(alert))
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=CHANNEL_TIMEOUT_S) as smtp:
        if settings.smtp_user:
            smtp.starttls()
            smtp.login(settings.smtp_user, settings.smtp_password)
        smtp.send_message(message)


SENDERS = {"slack": send_slack, "email": send_email}


def delivery_error(exc: BaseException, settings: Settings | None = None) -> str:
    """What a failed delivery says in logs and in audit_log: the error's type and text with every secret
    (webhook URL and its path, SMTP password) replaced by ***, cut to 300 characters."""
    return redact(f"{type(exc).__name__}: {exc}", settings)[:300]


def configured_channels(settings: Settings | None = None) -> list[str]:
    """External channels with a configuration; none while offline (MLSA_OFFLINE=1 never tries the network)."""
    settings = settings or get_settings()
    if settings.offline:
        return []
    channels = []
    if settings.slack_webhook_url:
        channels.append("slack")
    if settings.smtp_host and settings.smtp_to:
        channels.append("email")
    return channels


def pending_deliveries(channel: str, alert_ids: list[int] | None = None, limit: int = 50,
                       db: sqlite_utils.Database | None = None) -> list[dict]:
    """Alerts not yet delivered on `channel` with fewer than MAX_DELIVERY_ATTEMPTS failures, oldest first."""
    db = db or get_db()
    id_clause, params = "", []
    if alert_ids is not None:
        id_clause = f"AND a.id IN ({', '.join('?' * len(alert_ids))})"
        params = list(alert_ids)
    attempts = ("SELECT COUNT(*) FROM audit_log l WHERE l.target = 'alert:' || a.id AND l.action = ? "
                "AND json_extract(l.details_json, '$.channel') = ?")
    return list(db.query(
        f"SELECT a.* FROM alerts a WHERE ({attempts}) = 0 AND ({attempts}) < ? {id_clause} ORDER BY a.id LIMIT ?",
        ["alert_delivered", channel, "alert_delivery_failed", channel, MAX_DELIVERY_ATTEMPTS, *params, limit],
    ))


def deliver_pending(db: sqlite_utils.Database | None = None, alert_ids: list[int] | None = None) -> dict[str, int]:
    """Send undelivered alerts on every configured channel; returns {"sent": n, "failed": n}."""
    db = db or get_db()
    settings = get_settings()
    counts = {"sent": 0, "failed": 0}
    for channel in configured_channels(settings):
        for alert in pending_deliveries(channel, alert_ids, db=db):
            try:
                SENDERS[channel](alert, settings)
            except Exception as exc:  # a failing channel must not stop the cycle or lose the alert
                error = delivery_error(exc, settings)
                log.warning("alert %s: %s delivery failed (%s); will retry", alert["id"], channel, error)
                outcome, details = "alert_delivery_failed", {"channel": channel, "error": error}
                counts["failed"] += 1
            else:
                outcome, details = "alert_delivered", {"channel": channel}
                counts["sent"] += 1
            with transaction(db):
                audit(db, "alerts", outcome, f"alert:{alert['id']}", details)
    return counts
