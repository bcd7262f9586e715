"""``mantis-stream config [--json]``: the effective configuration, secrets masked.

Why this exists
===============

A worker's behaviour depends on ``MANTIS_*`` variables, an optional settings
file (``MANTIS_CONFIG_FILE``, read before the environment) and the
OpenTelemetry SDK's ``OTEL_*`` variables.  This command prints what the worker
would use, the same way it would read it (``Settings.from_env``), with
passwords, tokens and OTLP header values masked, and names any value it can
already tell is wrong, one line each on stderr (exit status 1): a DSN or URL
that cannot be parsed, an unknown exporter or protocol, an unusable sampling
strategies file.  No broker or database is contacted.

Usage
=====

.. sourcecode:: sh

    mantis-stream config            # name=value, one per line
    mantis-stream config --json     # {"settings": {...}, "environment": {...}}
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from .. import limits
from ..cli import command, option
from ..kafka import broker_credentials
from ..settings import (
    Settings,
    check_broker_url,
    check_postgres_dsn,
    current_settings,
    environment_with_file,
    mask_headers,
    mask_url,
    secret,
)
from ._oneline import one_line_errors

MASK = "***"
#: Variable-name parts whose values are secrets.
SECRET_PARTS = ("PASSWORD", "TOKEN", "SECRET", "CREDENTIAL")
#: OTLP header variables: ``k1=v1,k2=v2``; values are credentials (API keys, basic auth).
HEADER_VARS = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
               "OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_LOGS_HEADERS")
#: Environment variables shown as they are set, besides the settings (the SDK reads the OTEL_* ones itself).
EXTRA_PREFIXES = ("OTEL_", "MANTIS_KAFKA_", "MANTIS_TRACING_")


def mask_env(name: str, value: str) -> str:
    if name in HEADER_VARS or name.endswith("_HEADERS"):
        return mask_headers(value)
    if any(part in name for part in SECRET_PARTS):
        return MASK if value else value
    if "://" in value:
        return ",".join(mask_url(v) or v for v in value.split(","))
    return value


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The ``OTEL_*`` (and Kafka security) variables that are set, masked, sorted by name."""
    env = dict(os.environ if env is None else env)
    return {k: mask_env(k, v) for k, v in sorted(env.items()) if k.startswith(EXTRA_PREFIXES)}


def check_influx_url(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"cannot be parsed ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r}: use http:// or https://"
    if not parts.hostname:
        return "no host"
    if not parts.path.strip("/"):
        return "no database in the path (e.g. http://localhost:8086/mantis)"
    return None


def problems(s: Settings, env: dict[str, str] | None = None) -> list[str]:
    """What is already known to be wrong, one line each, naming the variable."""
    env = dict(os.environ if env is None else env)
    out = []
    if (msg := check_broker_url(s.broker)) is not None:
        out.append(f"MANTIS_BROKER: {msg}")
    if (dsn := secret(s.postgres_dsn)) and (msg := check_postgres_dsn(dsn)) is not None:
        out.append(f"MANTIS_POSTGRES_DSN: {msg}")
    if (url := secret(s.influxdb_url)) and (msg := check_influx_url(url)) is not None:
        out.append(f"MANTIS_INFLUXDB_URL: {msg}")
    exporters = [n.strip().lower() for n in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(",") if n.strip()]
    for name in exporters:
        if name not in ("otlp", "otlp_proto_grpc", "otlp_proto_http", "console", "none"):
            out.append(f"OTEL_TRACES_EXPORTER={name!r}: use 'otlp', 'console' or 'none'")
    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = (env.get(var) or "").strip().lower()
        if protocol and protocol not in ("grpc", "http/protobuf", "http"):
            out.append(f"{var}={protocol!r}: use 'grpc' or 'http/protobuf'")
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() != "true" and not env.get("OTEL_TRACES_SAMPLER"):
        from ..tracing.sampling import StrategiesFileError
        from ..tracing.setup import _strategies_for

        try:
            _strategies_for(s)
        except StrategiesFileError as exc:
            out.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - report, don't crash the report
            out.append(f"MANTIS_SAMPLING_STRATEGIES: {exc}")
    return out


def checked_settings() -> Settings:
    """The settings, stopped with one line by the checks a worker makes at start (sizes, Kafka TLS files)."""
    s = current_settings()
    limits.check(s)
    broker_credentials(s)
    return s


def effective(s: Settings, env: dict[str, str] | None = None) -> dict[str, Any]:
    return {"settings": s.masked(), "environment": environment(env)}


def _flat(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _flat(f"{prefix}.{k}" if prefix else str(k), v)]
    return [(prefix, value)]


def render_lines(data: dict[str, Any]) -> str:
    lines = []
    for name, value in _flat("", data["settings"]):
        lines.append(f"{name}={'' if value is None else value}")
    for name, value in data["environment"].items():
        lines.append(f"{name}={value}")
    return "\n".join(lines)


@command(
    option("--json", "as_json", is_flag=True, default=False, help="One JSON object instead of name=value lines."),
)
@one_line_errors
async def config(self: object, as_json: bool) -> None:
    """Print the effective configuration (settings and OTEL_* variables), secrets masked."""
    settings = checked_settings()
    env = environment_with_file(settings)  # the worker puts the settings file's OTEL_* there for the SDK
    data = effective(settings, env)
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(render_lines(data))
    sys.stdout.flush()
    found = problems(settings, env)
    for line in found:
        print(f"mantis-stream config: {line}", file=sys.stderr)
    if found:
        raise SystemExit(1)
