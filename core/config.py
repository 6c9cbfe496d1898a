"""Settings: every tunable of the app, read from `MLSA_*` environment variables with documented defaults.

Eight settings also accept the conventional names analysts already use (`CONVENTIONAL_NAMES`, e.g.
`AB_MIN_SAMPLES`, `ALERT_SLACK_WEBHOOK`); the `MLSA_*` name wins when both are set, and
`log_setting_names` says at startup which name each came from (names only, never values).

`get_settings()` reads the environment on each call (a dozen look-ups, microseconds), so tests and the
scheduler can change a variable and see it at once without cache invalidation.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import quote, unquote

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SECRET_FIELDS = ("slack_webhook_url", "smtp_password")  # never stored, logged or shown; see `redact`
MASK = "***"
_MIN_TOKEN = 6  # URL path segments at least this long are treated as tokens on their own


# The names analysts already use (issue 14), beside the MLSA_* ones: MLSA_<key> -> conventional name.
# MLSA_* wins when both are set; `setting_names_line` says at startup which name each value came from.
CONVENTIONAL_NAMES = {
    "DRIFT_CHECK_TIME": "DRIFT_CHECK_FREQUENCY",
    "DRIFT_PSI_THRESHOLD": "DRIFT_PSI_THRESHOLD",
    "DRIFT_PERF_THRESHOLD": "DRIFT_PERF_THRESHOLD",
    "AB_MIN_SAMPLES": "AB_MIN_SAMPLES",
    "AB_CONFIDENCE_LEVEL": "AB_CONFIDENCE_LEVEL",
    "AB_DEFAULT_DURATION_DAYS": "AB_DEFAULT_DURATION_DAYS",
    "SMTP_TO": "ALERT_EMAIL",
    "SLACK_WEBHOOK_URL": "ALERT_SLACK_WEBHOOK",
}
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):[0-5]\d$")


def _daily_at(raw: str, default: str) -> str:
    """DRIFT_CHECK_FREQUENCY as a time of day: the cycle judges daily closes, so it runs once per day,
    "daily" at the default time or at "HH:MM". Any other frequency is refused in words, not ignored."""
    value = raw.strip().lower()
    if value == "daily":
        return default
    if _CLOCK.match(value):
        return value
    raise ValueError(f"DRIFT_CHECK_FREQUENCY={raw!r}: the daily cycle runs once per trading day (the data are daily "
                     "closes); use 'daily' (at MLSA_DRIFT_CHECK_TIME's default) or a time of day 'HH:MM'.")


_CONVENTIONAL_PARSERS = {"DRIFT_CHECK_FREQUENCY": _daily_at}


def setting_name_used(key: str) -> str | None:
    """The environment variable that sets MLSA_<key>'s setting: MLSA_<key>, else its conventional name, else None."""
    if f"MLSA_{key}" in os.environ:
        return f"MLSA_{key}"
    conventional = CONVENTIONAL_NAMES.get(key)
    return conventional if conventional is not None and conventional in os.environ else None


def _env(name: str, default: str) -> str:
    used = setting_name_used(name)
    if used is None:
        return default
    parse = _CONVENTIONAL_PARSERS.get(used)
    return parse(os.environ[used], default) if parse else os.environ[used]


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name, "1" if default else "0").strip().lower()
    return raw in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """One frozen snapshot of the configuration; see README "Configuration" for each variable."""

    db_path: Path
    models_dir: Path
    data_dir: Path
    offline: bool
    yfinance_timeout_s: float
    # storage: how long a connection waits for another writer before saying the database is busy
    db_busy_timeout_s: float
    page_busy_timeout_s: float
    # training
    train_window_days: int
    validation_splits: int
    interval_coverage: float
    min_history_days: int
    train_threads: int
    # drift
    drift_psi_threshold: float
    drift_psi_moderate: float
    drift_ks_alpha: float
    drift_share_threshold: float
    drift_perf_threshold: float
    drift_window_days: int
    drift_check_time: str
    drift_arl_days: int
    # A/B tests
    ab_min_samples: int
    ab_confidence_level: float
    ab_default_duration_days: int
    # the challenger stage: a retrain that passes its gate earns its place in a shadow A/B test
    challenger_ab_test: bool
    challenger_min_samples: int
    challenger_deploy: str
    # retraining
    enable_auto_retrain: bool
    retrain_confirmations: int
    retrain_cooldown_days: int
    retrain_margin: float
    validation_window_days: int
    # alerts
    slack_webhook_url: str
    smtp_host: str
    smtp_port: int
    smtp_user: str
    smtp_password: str
    smtp_from: str
    smtp_to: str
    # certification
    cert_min_skill: float
    cert_max_skill_std: float
    cert_min_ci_lower: float
    cert_max_latency_p95_ms: float
    cert_max_skill: float
    # certification of direction models (accuracy edge = accuracy - the better baseline's, per fold)
    cert_dir_min_accuracy_edge: float
    cert_dir_max_accuracy_edge: float
    cert_dir_max_accuracy_std: float
    cert_dir_min_ci_lower: float
    # explainability
    explain_window_days: int
    explain_image_format: str
    # cluster: a Dask scheduler address (tcp://host:8786) runs the per-model work there; empty = in process
    dask_scheduler: str = ""


def get_settings() -> Settings:
    """Read the current configuration from the environment."""
    data_dir = Path(_env("DATA_DIR", str(PROJECT_ROOT / "data")))
    return Settings(
        db_path=Path(_env("DB_PATH", str(data_dir / "app.db"))),
        models_dir=Path(_env("MODELS_DIR", str(PROJECT_ROOT / "models"))),
        data_dir=data_dir,
        offline=_env_bool("OFFLINE", False),
        yfinance_timeout_s=float(_env("YFINANCE_TIMEOUT", "4")),
        db_busy_timeout_s=float(_env("DB_BUSY_TIMEOUT", "30")),
        page_busy_timeout_s=float(_env("PAGE_BUSY_TIMEOUT", "5")),
        train_window_days=int(_env("TRAIN_WINDOW_DAYS", "1000")),
        validation_splits=int(_env("VALIDATION_SPLITS", "5")),
        interval_coverage=float(_env("INTERVAL_COVERAGE", "0.90")),
        min_history_days=int(_env("MIN_HISTORY_DAYS", "300")),
        train_threads=max(1, int(_env("TRAIN_THREADS", "2"))),
        drift_psi_threshold=float(_env("DRIFT_PSI_THRESHOLD", "0.25")),
        drift_psi_moderate=float(_env("DRIFT_PSI_MODERATE", "0.10")),
        drift_ks_alpha=float(_env("DRIFT_KS_ALPHA", "0.05")),
        drift_share_threshold=float(_env("DRIFT_SHARE_THRESHOLD", "0.15")),
        drift_perf_threshold=float(_env("DRIFT_PERF_THRESHOLD", "0.20")),
        drift_window_days=int(_env("DRIFT_WINDOW_DAYS", "30")),
        drift_check_time=_env("DRIFT_CHECK_TIME", "06:00"),
        drift_arl_days=int(_env("DRIFT_ARL_DAYS", "250")),
        ab_min_samples=int(_env("AB_MIN_SAMPLES", "30")),
        ab_confidence_level=float(_env("AB_CONFIDENCE_LEVEL", "0.95")),
        ab_default_duration_days=int(_env("AB_DEFAULT_DURATION_DAYS", "30")),
        challenger_ab_test=_env_bool("CHALLENGER_AB_TEST", True),
        # 30 calendar days hold ~21 trading days: the A/B default of 30 samples could never be reached
        challenger_min_samples=int(_env("CHALLENGER_MIN_SAMPLES", "15")),
        challenger_deploy=_env("CHALLENGER_DEPLOY", "auto").strip().lower(),  # "auto" or "approval"
        enable_auto_retrain=_env_bool("ENABLE_AUTO_RETRAIN", False),
        retrain_confirmations=int(_env("RETRAIN_CONFIRMATIONS", "3")),
        retrain_cooldown_days=int(_env("RETRAIN_COOLDOWN_DAYS", "7")),
        retrain_margin=float(_env("RETRAIN_MARGIN", "0.02")),
        validation_window_days=int(_env("VALIDATION_WINDOW_DAYS", "5")),
        slack_webhook_url=_env("SLACK_WEBHOOK_URL", ""),
        smtp_host=_env("SMTP_HOST", ""),
        smtp_port=int(_env("SMTP_PORT", "587")),
        smtp_user=_env("SMTP_USER", ""),
        smtp_password=_env("SMTP_PASSWORD", ""),
        smtp_from=_env("SMTP_FROM", ""),
        smtp_to=_env("SMTP_TO", ""),
        cert_min_skill=float(_env("CERT_MIN_SKILL", "0.0")),
        cert_max_skill_std=float(_env("CERT_MAX_SKILL_STD", "0.05")),
        cert_min_ci_lower=float(_env("CERT_MIN_CI_LOWER", "-0.02")),
        cert_max_latency_p95_ms=float(_env("CERT_MAX_LATENCY_P95_MS", "2000")),
        cert_max_skill=float(_env("CERT_MAX_SKILL", "0.10")),
        cert_dir_min_accuracy_edge=float(_env("CERT_DIR_MIN_ACCURACY_EDGE", "0.0")),
        cert_dir_max_accuracy_edge=float(_env("CERT_DIR_MAX_ACCURACY_EDGE", "0.10")),  # more is a leak, not skill
        cert_dir_max_accuracy_std=float(_env("CERT_DIR_MAX_ACCURACY_STD", "0.05")),
        cert_dir_min_ci_lower=float(_env("CERT_DIR_MIN_CI_LOWER", "-0.02")),
        explain_window_days=int(_env("EXPLAIN_WINDOW_DAYS", "250")),
        explain_image_format=_env("EXPLAIN_IMAGE_FORMAT", "png").strip().lower(),
        dask_scheduler=_env("DASK_SCHEDULER", "").strip(),
    )


def setting_names_line() -> str:
    """One line for the startup log: for each setting with a conventional name, which name set it (or the
    default), and which one was ignored when both are set. Names only: never a value, so never a secret."""
    parts = []
    for key, conventional in CONVENTIONAL_NAMES.items():
        used = setting_name_used(key)
        part = f"{key.lower()} from {used or 'default'}"
        if used == f"MLSA_{key}" and conventional in os.environ and conventional != used:
            part += f" ({conventional} also set, ignored)"
        parts.append(part)
    return "settings: " + "; ".join(parts)


def log_setting_names(logger: logging.Logger | None = None) -> str:
    """Log `setting_names_line` at INFO (the scheduler calls this once at startup); returns the line."""
    line = setting_names_line()
    (logger or logging.getLogger(__name__)).info(line)
    return line


def settings_table() -> list[dict[str, str]]:
    """The settings as rows (name, value) for display; secrets are masked."""
    current = get_settings()
    rows = []
    for field in fields(current):
        value = getattr(current, field.name)
        if field.name in SECRET_FIELDS and value:
            value = "(set)"
        rows.append({"setting": field.name, "value": str(value)})
    return rows


_URL_PARTS = re.compile(r"^(?:([^:/?#]+):)?(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$", re.DOTALL)  # RFC 3986 app. B
_DELIMITERS = re.compile(r"[:/?#\[\]@&=\s\x00-\x1f\x7f'\"\\<>]+")  # URL delimiters, blanks, controls, quotes
_MIN_PIECE = 4  # a piece of a secret shorter than this ("80", "x") is not replaced on its own: it would mangle any text


def _url_pieces(value: str) -> set[str]:
    """Every piece of `value` read as a URL that an error message might quote on its own: netloc, userinfo,
    user, password, host (with and without IPv6 brackets), port, path and its long segments, query and
    its values, fragment. Never raises: the RFC 3986 regular expression matches any string, so a value
    urlsplit refuses ("http://[x", a port that is not a number) is still taken apart."""
    text = value if "//" in value else "//" + value  # a URL without a scheme too
    match = _URL_PARTS.match(text)
    if match is None:  # pragma: no cover - the expression matches every string
        return set()
    _scheme, netloc, path, query, fragment = (part or "" for part in match.groups())
    pieces = {netloc, path, query, fragment}
    userinfo, _, hostport = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    pieces.update({userinfo, hostport, password})
    if hostport.startswith("[") and "]" in hostport:  # [ipv6]:port
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
        pieces.update({host, f"[{host}]"})
    else:
        host, _, port = hostport.partition(":") if not hostport.startswith("[") else (hostport, "", "")
        pieces.update({host, host.lstrip("[")})
    pieces.add(port)
    # a user name, a path segment or a query value is replaced on its own when it is long enough to be a
    # token (a short one like "user" or "id" would mangle ordinary words); query keys are not secrets
    tokens = [user, *path.split("/"), *(pair.partition("=")[2] for pair in query.split("&"))]
    pieces.update(token for token in tokens if len(token) >= _MIN_TOKEN)
    # and any long run between URL delimiters, wherever the value was cut (a fragment "[]@token", a typo)
    pieces.update(token for token in _DELIMITERS.split(value) if len(token) >= _MIN_TOKEN)
    return {piece for piece in pieces if len(piece) >= _MIN_PIECE}


def _secret_values(settings: Settings | None) -> list[str]:
    """The secrets' raw values: from `settings`, else the current settings, else straight from the
    environment (a settings value that does not parse, e.g. MLSA_SMTP_PORT=abc, must not stop redaction)."""
    if settings is None:
        try:
            settings = get_settings()
        except Exception:  # noqa: BLE001 - redaction must never fail; fall back to the raw variables
            values = [os.environ.get(f"MLSA_{name.upper()}", "") for name in SECRET_FIELDS]
            return values + _conventional_secrets()
    return [str(getattr(settings, name, "") or "") for name in SECRET_FIELDS] + _conventional_secrets()


def _conventional_secrets() -> list[str]:
    """The secrets set under their conventional names (ALERT_SLACK_WEBHOOK), also when an MLSA_* name won."""
    return [os.environ.get(CONVENTIONAL_NAMES[name.upper()], "") for name in SECRET_FIELDS if name.upper() in CONVENTIONAL_NAMES]


def _secret_fragments(settings: Settings | None) -> list[str]:
    """Every string that would give a secret away, longest first. Never raises.

    The raw value and its stripped and percent-encoded forms; for a URL also every piece of it (netloc,
    userinfo, host, port, path, query, fragment, long path segments; see `_url_pieces`), because error
    messages often quote only part of a URL (http.client quotes the path or a non-numeric port, urllib the
    whole malformed string) and a webhook's token lives in its path. Each also as `repr` would escape it
    (messages quote with !r) and percent-decoded.
    """
    found: set[str] = set()
    for raw in _secret_values(settings):
        for value in {raw, raw.strip()} - {""}:
            found.add(value)
            try:
                found.add(quote(value, safe=":/?&=@"))
                found.update(_url_pieces(value))
            except Exception:  # noqa: BLE001 - the raw value is still replaced
                pass
    for fragment in list(found):
        for form in (repr(fragment)[1:-1], unquote(fragment)):
            if len(form) >= _MIN_PIECE:
                found.add(form)
    found.discard(MASK)
    return sorted(found, key=len, reverse=True)


def redact(text: object, settings: Settings | None = None) -> str:
    """`text` with every secret of the settings (Slack webhook URL, SMTP password) replaced by ***.

    The one filter for anything that could echo a settings value: delivery errors before they are
    logged or stored, messages shown on pages. Works on malformed values too (a webhook without a
    scheme is quoted whole by urllib's error, and is replaced whole; one urlsplit refuses is still taken
    apart). Never raises: it runs inside error handlers, where an exception would hide the first one.
    """
    try:
        out = str(text)
    except Exception:  # noqa: BLE001 - an object whose __str__ fails
        out = f"<{type(text).__name__}>"
    try:
        fragments = _secret_fragments(settings)
    except Exception:  # noqa: BLE001 - should not happen; the raw values are still masked
        fragments = sorted((v for v in _secret_values(None) if v), key=len, reverse=True)
    for fragment in fragments:
        out = out.replace(fragment, MASK)
    return out
