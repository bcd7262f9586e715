"""Broker URLs, security (TLS/SASL) and the two broker profiles.

Why profiles: the local Tansu broker makes a group join wait half the session
timeout, so the ``local`` profile uses short timeouts (ready in ~5 s); the
``production`` profile keeps Kafka's defaults.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from faust.auth import SASLCredentials, SSLCredentials

from ._compat import faust as faust_compat
from .settings import Settings, current_settings, secret


def broker_urls(broker: str) -> list[str]:
    """``MANTIS_BROKER`` may list several comma-separated URLs."""
    return [u.strip() if "://" in u else f"kafka://{u.strip()}" for u in broker.split(",") if u.strip()]


def bootstrap_servers(broker: str) -> list[str]:
    """``host:port`` strings for plain aiokafka clients (CLI commands, tests)."""
    return [u.split("://", 1)[1] for u in broker_urls(broker)]


log = logging.getLogger(__name__)


def _reachable(host: str, port: int, timeout: float = 1.0) -> str | None:
    """None when ``host:port`` accepts a TCP connection, else the reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def wait_for_broker(broker: str, timeout: float, *, probe: Callable[[str, int], str | None] = _reachable,
                    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> float:
    """Block until one broker URL of ``broker`` accepts connections; return the seconds waited.

    Why: aiokafka's producer gives up at once when no bootstrap server answers
    ("Unable to bootstrap"), so a worker started before its broker (compose,
    Kubernetes, a broker restart) would exit.  This retries with a capped
    back-off, logging every attempt, and exits clearly after ``timeout``
    seconds (``MANTIS_BROKER_WAIT``; 0: one try, and a clear exit when no broker answers).
    """
    servers = []
    for hostport in bootstrap_servers(broker):
        host, _, port = hostport.rpartition(":")
        servers.append((host.strip("[]") or "localhost", int(port or 9092)))
    start = clock()
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        reasons = []
        for server_host, server_port in servers:
            reason = probe(server_host, server_port)
            if reason is None:
                waited = clock() - start
                if attempt > 1:
                    log.warning("mantis-stream: broker %s:%s reachable after %.1f s; starting", host, port, waited)
                return waited
            reasons.append(f"{host}:{port} ({reason})")
        waited = clock() - start
        if waited >= timeout:
            if timeout <= 0:
                raise SystemExit(f"mantis-stream: no Kafka broker answered at {', '.join(reasons)} "
                                 "(MANTIS_BROKER_WAIT=0: no waiting); start the broker or check MANTIS_BROKER")
            raise SystemExit(f"mantis-stream: no Kafka broker answered at {', '.join(reasons)} within {timeout:.0f} s "
                             "(MANTIS_BROKER_WAIT); giving up")
        delay = min(delay, max(0.1, timeout - waited))
        log.warning("mantis-stream: Kafka broker not reachable: %s; retrying in %.1f s (attempt %d, waited %.0f of %.0f s)",
                    ", ".join(reasons), delay, attempt, waited, timeout)
        sleep(delay)
        delay = min(delay * 2, 5.0)


def install_broker_wait(app: Any, broker: str, timeout: float) -> None:
    """Wait for the broker when ``worker`` starts, after its start checks (not before other CLI commands)."""
    from .runtime import run_start_checks, wait_at_worker_start

    wait_at_worker_start(lambda: wait_for_broker(broker, timeout))
    app.on_worker_init.connect(run_start_checks, weak=False)


def profile_options(profile: str) -> dict[str, Any]:
    if profile == "local":
        return {
            "broker_session_timeout": 6.0,
            "broker_heartbeat_interval": 1.0,
            "broker_rebalance_timeout": 6.0,
        }
    return {}


def limit_fetch_wait(max_wait_ms: int) -> None:
    """Cap how long the worker's consumer lets the broker hold a fetch.

    Why: Kafka answers a fetch as soon as data arrives, but Tansu holds it for
    the whole ``fetch_max_wait_ms`` (a message waits out the rest of the
    1500 ms Faust hard-codes), which adds up to a second of latency per hop.
    The local profile asks for ``MANTIS_FETCH_MAX_WAIT_MS`` instead; the
    consumer is patched after Faust builds it and before it starts.
    """
    faust_compat.worker_fetch_max_wait(max_wait_ms)


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS context from ``MANTIS_KAFKA_SSL_*``; a file that cannot be read stops in one line."""
    files = {"MANTIS_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile, "MANTIS_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
             "MANTIS_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile}
    for name, path in files.items():
        if path is not None and not os.path.isfile(path):
            raise SystemExit(f"mantis-stream: {name}={path!r}: no such file")
    try:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise SystemExit(f"mantis-stream: MANTIS_KAFKA_SSL_*: cannot load the certificates ({exc})") from None
    return context


def broker_credentials(settings: Settings | None = None) -> Any:
    """Kafka TLS and SASL from the ``MANTIS_KAFKA_*`` settings (None: plaintext), as Faust takes them.

    ``MANTIS_KAFKA_SECURITY_PROTOCOL``: ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``;
    ``MANTIS_KAFKA_SSL_CAFILE`` / ``_SSL_CERTFILE`` / ``_SSL_KEYFILE``;
    ``MANTIS_KAFKA_SASL_MECHANISM`` (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``),
    ``MANTIS_KAFKA_SASL_USERNAME``, ``MANTIS_KAFKA_SASL_PASSWORD``.
    A setting that cannot work stops in one line naming the variable.
    """
    settings = settings if settings is not None else current_settings()
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = _ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return SSLCredentials(context)
    if not settings.kafka_sasl_username:
        raise SystemExit(f"mantis-stream: MANTIS_KAFKA_SECURITY_PROTOCOL={protocol}: set MANTIS_KAFKA_SASL_USERNAME "
                         "and MANTIS_KAFKA_SASL_PASSWORD")
    return SASLCredentials(
        username=settings.kafka_sasl_username,
        password=secret(settings.kafka_sasl_password) or "",
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )


def client_options(broker: str, settings: Settings | None = None) -> dict[str, Any]:
    """``bootstrap_servers`` and the security options for an aiokafka client the project makes.

    Why one builder: the worker (through Faust) and every other client
    (``produce``, ``replay``, ``demo``, the recovery's highwater probe) must
    speak to the broker the same way; Faust's own mapping of the credentials
    is used, so the options are exactly the worker's.
    """
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return {"bootstrap_servers": bootstrap_servers(broker), **credentials_to_aiokafka_auth(broker_credentials(settings))}
