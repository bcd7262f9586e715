"""Security: secrets never in logs or spans, payloads never on spans, Kafka TLS/SASL mapping.

Why: spans go to a collector more people can read than the plant's database,
and worker logs end up in log aggregators.  One worker runs with a PostgreSQL
DSN and an InfluxDB URL holding passwords (the InfluxDB one unreachable, so its
errors are logged), an ingest token, OTLP headers and an extra deny-list entry;
readings carry secrets in ``meta`` and distinctive sample values.  No secret and
no sample value may appear in its log or in any exported span.
"""

from __future__ import annotations

import secrets
import ssl
import subprocess
import uuid
from pathlib import Path

import aiohttp
import orjson
import pytest
from faust.auth import SASLCredentials, SSLCredentials

from mantis_stream import topics as names
from mantis_stream.demo.broker import free_port
from mantis_stream.kafka import broker_credentials
from mantis_stream.settings import Settings, current_settings, mask_url

from conftest import collect, produce
from otlp_receiver import OTLPReceiver

# ------------------------------------------------------------ broker_credentials


@pytest.fixture
def kafka_env(monkeypatch):  # type: ignore[no-untyped-def]
    """Sets ``MANTIS_KAFKA_*`` variables; broker_credentials() then reads them (the cached settings are dropped)."""
    for name in ("SECURITY_PROTOCOL", "SSL_CAFILE", "SSL_CERTFILE", "SSL_KEYFILE", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD"):
        monkeypatch.delenv(f"MANTIS_KAFKA_{name}", raising=False)

    def set_env(**kw: str) -> None:
        for k, v in kw.items():
            monkeypatch.setenv(f"MANTIS_KAFKA_{k.upper()}", v)
        current_settings.cache_clear()

    current_settings.cache_clear()
    yield set_env
    current_settings.cache_clear()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A self-signed CA/cert and key made with openssl (skip without it)."""
    d = tmp_path_factory.mktemp("tls")
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], check=True, capture_output=True, timeout=60)
    except (FileNotFoundError, subprocess.SubprocessError):
        pytest.skip("openssl not available")
    return {"ca": str(d / "cert.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}


def test_plaintext_by_default(kafka_env) -> None:  # type: ignore[no-untyped-def]
    assert broker_credentials() is None
    kafka_env(security_protocol="plaintext")
    assert broker_credentials() is None


def test_ssl_maps_to_ssl_credentials_with_ca_and_client_cert(kafka_env, tls_files) -> None:  # type: ignore[no-untyped-def]
    kafka_env(security_protocol="SSL", ssl_cafile=tls_files["ca"], ssl_certfile=tls_files["cert"], ssl_keyfile=tls_files["key"])
    creds = broker_credentials()
    assert isinstance(creds, SSLCredentials)
    ctx = creds.context
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname, "TLS must verify the broker"
    assert any(c.get("subject") == ((("commonName", "127.0.0.1"),),) for c in ctx.get_ca_certs())


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_maps_username_password_mechanism(kafka_env, mechanism: str) -> None:  # type: ignore[no-untyped-def]
    kafka_env(security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism, sasl_username="svc", sasl_password="pw")
    creds = broker_credentials()
    assert isinstance(creds, SASLCredentials)
    assert (creds.username, creds.password) == ("svc", "pw")
    assert str(creds.mechanism.value if hasattr(creds.mechanism, "value") else creds.mechanism) == mechanism
    assert creds.ssl_context is None
    assert "pw" not in repr(creds), "the password must not show in the credentials' repr"


def test_sasl_ssl_carries_a_verifying_context(kafka_env, tls_files) -> None:  # type: ignore[no-untyped-def]
    kafka_env(security_protocol="SASL_SSL", ssl_cafile=tls_files["ca"], sasl_username="svc", sasl_password="pw")
    creds = broker_credentials()
    assert isinstance(creds, SASLCredentials) and isinstance(creds.ssl_context, ssl.SSLContext)
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert str(getattr(creds.mechanism, "value", creds.mechanism)) == "PLAIN"


def test_unknown_protocol_is_refused_clearly(kafka_env) -> None:  # type: ignore[no-untyped-def]
    kafka_env(security_protocol="SASL_TLS")
    with pytest.raises(SystemExit, match="MANTIS_KAFKA_SECURITY_PROTOCOL='SASL_TLS': use one of PLAINTEXT, SSL"):
        broker_credentials()


def test_missing_ca_file_fails_at_start_not_later(kafka_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kafka_env(security_protocol="SSL", ssl_cafile=str(tmp_path / "missing.pem"))
    with pytest.raises(SystemExit, match=r"^mantis-stream: MANTIS_KAFKA_SSL_CAFILE='.*missing.pem': no such file$"):
        broker_credentials()


def test_settings_masked_hides_every_secret(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MANTIS_POSTGRES_DSN", "postgresql://u:pgpw@db:5432/m")
    monkeypatch.setenv("MANTIS_INFLUXDB_URL", "http://u:influxpw@influx:8086/m")
    monkeypatch.setenv("MANTIS_INGEST_TOKEN", "tok")
    text = str(Settings.from_env().masked())
    assert "pgpw" not in text and "influxpw" not in text and "'tok'" not in text
    assert mask_url("postgresql://u:p%40ss@db/m") == "postgresql://u:***@db/m"


# ------------------------------------------------------------ worker end to end

PG_NOTE = "PostgreSQL from tests/servers.py: its DSN carries a password (trust auth ignores it)"


async def test_no_secret_or_payload_in_logs_or_spans(broker, start_worker, postgres_dsn) -> None:  # type: ignore[no-untyped-def]
    influx_pw, token, otlp_secret = "InfluxPw" + secrets.token_hex(4), "Tok" + secrets.token_hex(6), "Otlp" + secrets.token_hex(4)
    meta_secret, site_secret, marker = "MetaPw" + secrets.token_hex(4), "Site" + secrets.token_hex(4), 0.123456789
    pg_password = postgres_dsn.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert pg_password, PG_NOTE
    asset = f"SEC{uuid.uuid4().hex[:6]}"
    with OTLPReceiver() as rx:
        worker = await start_worker(env={
            "MANTIS_POSTGRES_DSN": postgres_dsn,
            "MANTIS_INFLUXDB_URL": f"http://mantis:{influx_pw}@127.0.0.1:{free_port()}/mantis",  # unreachable: errors get logged
            "MANTIS_INGEST_TOKEN": token,
            "MANTIS_TRACE_DENY_ATTRIBUTES": "site_*,operator",
            "MANTIS_FRAME_SIZE": "256",
            "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": rx.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {otlp_secret}",
        })
        meta = {"password": meta_secret, "site_code": site_secret, "operator": site_secret, "shaft_hz": 29.5}
        readings = [{"asset_id": asset, "sensor_id": "VIB", "ts": 1_790_000_000 + i, "values": [marker] * 128 + [-marker] * 128,
                     "sample_rate_hz": 1000.0, "meta": meta} for i in range(3)]
        readings += [{"asset_id": asset, "sensor_id": "TMP", "ts": 1_790_000_000 + i, "value": 20.5, "meta": meta} for i in range(3)]
        bad = [orjson.dumps({"asset_id": asset, "sensor_id": "BAD", "ts": f"x{meta_secret}", "value": 1}),
               orjson.dumps({"asset_id": asset, "sensor_id": "BAD", "ts": 1_790_000_000, "value": meta_secret})]
        tp = lambda: [("traceparent", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01".encode())]  # noqa: E731
        values = [orjson.dumps(r) for r in readings] + bad
        await produce(broker.bootstrap, names.READINGS, values, headers=[tp() for _ in values])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.post(worker.web_url + "/api/v1/ingest", data=orjson.dumps(readings[-1]),
                                    headers={"Authorization": f"Bearer {token}", "traceparent": tp()[0][1].decode()}) as resp:
                assert resp.status == 202
            async with session.post(worker.web_url + "/api/v1/ingest", data=b"{}", headers={"Authorization": f"Bearer x{token}"}) as resp:
                assert resp.status == 401

        def done(found: dict) -> bool:
            mine = [v for v, _, _ in found[names.ANOMALIES] if v["asset_id"] == asset]
            letters = [v for v, _, _ in found[names.DEAD_LETTERS] if asset in v["payload"]]
            return len(mine) >= 7 and len(letters) >= 2

        await collect(broker.bootstrap, (names.ANOMALIES, names.DEAD_LETTERS), done, timeout=180)
        spans = rx.wait_for(lambda s: {"mantis-anomaly-detection", "mantis-preprocessing"} <= {x.service for x in s}
                            and any(x.status == "ERROR" for x in s), timeout=60)
        worker.stop()
        spans = rx.snapshot()

    secrets_ = {"postgres password": pg_password, "influx password": influx_pw, "ingest token": token,
                "otlp header": otlp_secret, "meta password": meta_secret, "denied meta key": site_secret}
    log = worker.log()
    for name, value in secrets_.items():
        if name in ("meta password", "denied meta key"):
            continue  # these travel in the reading itself; only spans must not carry them
        assert value not in log, f"{name} appears in the worker's log"
    mine = [s for s in spans if asset in str(s.attributes) or any(asset in str(e) for e in getattr(s, "events", []))]
    assert spans and len({s.service for s in spans}) >= 3
    for s in spans:
        text = repr((s.name, s.attributes, getattr(s, "events", None), getattr(s, "resource", None), getattr(s, "status_message", None)))
        for name, value in secrets_.items():
            assert value not in text, f"{name} exported on span {s.service}/{s.name}: {text[:400]}"
        assert "0.123456789" not in text and "0.1234567" not in text, f"sample values exported on span {s.service}/{s.name}"
    assert mine, "spans of this test's readings were exported"
