"""Broker URLs, security (TLS/SASL) and the two broker profiles.

Why profiles: the local Tansu broker makes a group join wait half the session
timeout, so the ``local`` profile uses short timeouts (ready in ~5 s); the
``production`` profile keeps Kafka's defaults.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from faust.auth import SASLCredentials, SSLCredentials


def broker_urls(broker: str) -> list[str]:
    """``MANTIS_BROKER`` may list several comma-separated URLs."""
    return [u.strip() if "://" in u else f"kafka://{u.strip()}" for u in broker.split(",") if u.strip()]


def bootstrap_servers(broker: str) -> list[str]:
    """``host:port`` strings for plain aiokafka clients (CLI commands, tests)."""
    return [u.split("://", 1)[1] for u in broker_urls(broker)]


def profile_options(profile: str) -> dict[str, Any]:
    if profile == "local":
        return {
            "broker_session_timeout": 6.0,
            "broker_heartbeat_interval": 1.0,
            "broker_rebalance_timeout": 6.0,
        }
    return {}


def broker_credentials() -> Any:
    """Kafka TLS and SASL from ``MANTIS_KAFKA_*`` variables (None: plaintext).

    ``MANTIS_KAFKA_SECURITY_PROTOCOL``: ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``;
    ``MANTIS_KAFKA_SSL_CAFILE`` / ``_SSL_CERTFILE`` / ``_SSL_KEYFILE``;
    ``MANTIS_KAFKA_SASL_MECHANISM`` (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``),
    ``MANTIS_KAFKA_SASL_USERNAME``, ``MANTIS_KAFKA_SASL_PASSWORD``.
    """
    protocol = os.environ.get("MANTIS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=os.environ.get("MANTIS_KAFKA_SSL_CAFILE") or None)
        certfile = os.environ.get("MANTIS_KAFKA_SSL_CERTFILE")
        if certfile:
            context.load_cert_chain(certfile, os.environ.get("MANTIS_KAFKA_SSL_KEYFILE") or None)
    if protocol == "SSL":
        return SSLCredentials(context)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return SASLCredentials(
            username=os.environ.get("MANTIS_KAFKA_SASL_USERNAME", ""),
            password=os.environ.get("MANTIS_KAFKA_SASL_PASSWORD", ""),
            mechanism=os.environ.get("MANTIS_KAFKA_SASL_MECHANISM", "PLAIN"),
            ssl_context=context,
        )
    raise SystemExit(f"mantis-stream: MANTIS_KAFKA_SECURITY_PROTOCOL={protocol!r} is not supported")
