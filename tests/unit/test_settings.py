"""Settings: every variable parsed in one place, errors naming the variable, secrets never shown, no side effects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from mantis_stream.commands.config import effective, render_lines
from mantis_stream.settings import (
    DEFAULT_SERVICES,
    SECRET_FIELDS,
    Settings,
    apply_config_file,
    describe,
    secret,
    variable,
)
from mantis_stream.tracing import filelog


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MANTIS_* or OTEL_* variable from the caller's environment."""
    for name in list(os.environ):
        if name.startswith(("MANTIS_", "OTEL_")):
            monkeypatch.delenv(name)


def test_types_are_parsed_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MANTIS_PARTITIONS": "8", "MANTIS_BATCH_WITHIN": "0.2", "MANTIS_TRACE_DENY_ATTRIBUTES": "site_*, operator,",
        "MANTIS_KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "MANTIS_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "OTEL_SDK_DISABLED": " TRUE ", "MANTIS_SERVICE_ANOMALY_DETECTION": "plant-7-anomaly",
        "MANTIS_APP_ID": "", "MANTIS_SAMPLING_STRATEGIES": "/etc/strategies.json", "MANTIS_RUL_MODEL": "/m/rul.json",
        "MANTIS_TEST_FAULT": "anomaly:boom:2", "OTEL_SPAN_LINK_COUNT_LIMIT": "0", "MANTIS_TRACING_EXPORT": "Thread",
    }.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert (s.partitions, s.batch_within, s.trace_deny_attributes) == (8, 0.2, ("site_*", "operator"))
    assert (s.kafka_security_protocol, s.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert s.otel_sdk_disabled is True and s.tracing_export == "thread"
    assert s.services == {**DEFAULT_SERVICES, "anomaly-detection": "plant-7-anomaly"}
    assert s.app_id == "mantis-stream"  # empty counts as unset
    assert s.sampling_strategies == Path("/etc/strategies.json")
    assert (s.rul_model, s.test_fault, s.otel_span_link_count_limit) == ("/m/rul.json", "anomaly:boom:2", 0)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "1")
    assert Settings().otel_sdk_disabled is False  # only "true" disables, as in the OpenTelemetry SDK


def test_keyword_arguments_win_and_the_profile_follows_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANTIS_PARTITIONS", "8")
    assert Settings(partitions=2).partitions == 2
    with pytest.raises(ValidationError, match="partitons"):
        Settings(partitons=2)  # a misspelt setting is refused, not ignored
    assert Settings().broker_profile == "local"
    assert Settings(broker="kafka://kafka-1.plant:9092").broker_profile == "production"
    monkeypatch.setenv("MANTIS_BROKER", "127.0.0.1:9092,localhost:9093")
    assert Settings().broker_profile == "local"
    monkeypatch.setenv("MANTIS_BROKER_PROFILE", "production")
    assert Settings().broker_profile == "production"


@pytest.mark.parametrize(("env", "line"), [
    ({"MANTIS_PARTITIONS": "x"}, "MANTIS_PARTITIONS='x' is not an integer"),
    ({"MANTIS_PARTITIONS": "0"}, "MANTIS_PARTITIONS=0: must be at least 1"),
    ({"MANTIS_BATCH_WITHIN": "soon"}, "MANTIS_BATCH_WITHIN='soon' is not a number"),
    ({"MANTIS_BATCH_WITHIN": "nan"}, "MANTIS_BATCH_WITHIN=nan: must be at least 0"),
    ({"MANTIS_WEB_PORT": "70000"}, "MANTIS_WEB_PORT=70000: must be at most 65535"),
    ({"MANTIS_STOP_TIMEOUT": "0.5"}, "MANTIS_STOP_TIMEOUT=0.5: must be at least 1"),
    ({"MANTIS_BROKER_PROFILE": "staging"}, "MANTIS_BROKER_PROFILE='staging': use 'local' or 'production'"),
    ({"MANTIS_BROKER": "http://kafka:9092"}, "MANTIS_BROKER='http://kafka:9092': scheme 'http': use kafka://host:port"),
    ({"MANTIS_KAFKA_SECURITY_PROTOCOL": "sasl_tls"},
     "MANTIS_KAFKA_SECURITY_PROTOCOL='SASL_TLS': use one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ({"MANTIS_KAFKA_SASL_MECHANISM": "GSSAPI"},
     "MANTIS_KAFKA_SASL_MECHANISM='GSSAPI': use one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ({"MANTIS_TRACING_EXPORT": "fork"}, "MANTIS_TRACING_EXPORT='fork': use 'process' or 'thread'"),
    ({"MANTIS_TRACE_FILE_MAX_BYTES": "-1"}, "MANTIS_TRACE_FILE_MAX_BYTES=-1: must be at least 0"),
    ({"OTEL_SPAN_EVENT_COUNT_LIMIT": "many"}, "OTEL_SPAN_EVENT_COUNT_LIMIT='many' is not an integer"),
])
def test_a_bad_value_stops_in_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stop:
        Settings.from_env()
    assert str(stop.value) == f"mantis-stream: {line}"


def test_every_problem_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANTIS_PARTITIONS", "x")
    monkeypatch.setenv("MANTIS_BATCH_SIZE", "0")
    with pytest.raises(ValidationError) as error:
        Settings()
    assert describe(error.value) == ["MANTIS_PARTITIONS='x' is not an integer", "MANTIS_BATCH_SIZE=0: must be at least 1"]


SECRETS = {
    "MANTIS_POSTGRES_DSN": "postgresql://mantis:pg-s3cret@db:5432/mantis",
    "MANTIS_INFLUXDB_URL": "http://writer:influx-s3cret@influx:8086/mantis",
    "MANTIS_INGEST_TOKEN": "ingest-s3cret",
    "MANTIS_KAFKA_SASL_PASSWORD": "sasl-s3cret",
    "OTEL_EXPORTER_OTLP_HEADERS": "api-key=otlp-s3cret,x-team=ops",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "authorization=Basic traces-s3cret",
}


def test_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert {variable(field) for field in SECRET_FIELDS} == set(SECRETS)
    shown = repr(s) + str(s) + str(s.masked()) + render_lines(effective(s, {}))
    assert "s3cret" not in shown
    masked = s.masked()
    assert masked["postgres_dsn"] == "postgresql://mantis:***@db:5432/mantis"
    assert masked["influxdb_url"] == "http://writer:***@influx:8086/mantis"
    assert (masked["ingest_token"], masked["kafka_sasl_password"]) == ("***", "***")
    assert masked["otel_exporter_otlp_headers"] == "api-key=***,x-team=***"
    assert secret(s.postgres_dsn) == SECRETS["MANTIS_POSTGRES_DSN"]  # the one place that needs it unwraps it
    assert isinstance(s.kafka_sasl_password, SecretStr) and secret(None) is None


def test_reading_the_settings_changes_no_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_file = tmp_path / "mantis.env"
    settings_file.write_text("MANTIS_APP_ID=plant-7\nMANTIS_PARTITIONS=2\nOTEL_TRACES_SAMPLER=always_on\n"
                             "MANTIS_SERVICE_STORAGE=plant-7-storage\nMANTIS_KAFKA_SASL_PASSWORD=file-s3cret\n")
    monkeypatch.setenv("MANTIS_CONFIG_FILE", str(settings_file))
    monkeypatch.setenv("MANTIS_PARTITIONS", "8")
    before = dict(os.environ)
    s = Settings.from_env()
    assert dict(os.environ) == before
    assert (s.app_id, s.partitions, s.otel_traces_sampler) == ("plant-7", 8, "always_on")  # the environment wins
    assert s.services["storage"] == "plant-7-storage" and "file-s3cret" not in repr(s)
    for name in ("MANTIS_APP_ID", "OTEL_TRACES_SAMPLER", "MANTIS_SERVICE_STORAGE", "MANTIS_KAFKA_SASL_PASSWORD"):
        monkeypatch.setenv(name, "")  # recorded, so what apply_config_file sets is undone after the test
        monkeypatch.delenv(name)
    added = apply_config_file(s)
    assert set(added) == {"MANTIS_APP_ID", "OTEL_TRACES_SAMPLER", "MANTIS_SERVICE_STORAGE", "MANTIS_KAFKA_SASL_PASSWORD"}
    assert os.environ["OTEL_TRACES_SAMPLER"] == "always_on" and os.environ["MANTIS_PARTITIONS"] == "8"
    assert apply_config_file(Settings(config_file=None)) == {}


def test_a_settings_file_named_in_the_arguments_is_read(tmp_path: Path) -> None:
    settings_file = tmp_path / "mantis.toml"
    settings_file.write_text('MANTIS_BATCH_SIZE = 7\nOTEL_SDK_DISABLED = true\n')
    s = Settings(config_file=str(settings_file))
    assert (s.batch_size, s.otel_sdk_disabled) == (7, True)


def test_the_trace_file_defaults_are_the_export_process_defaults() -> None:
    """The export process reads the variables itself (it imports no application code): same defaults."""
    s = Settings()
    assert (s.trace_file_max_bytes, s.trace_file_backups) == (filelog.DEFAULT_MAX_BYTES, filelog.DEFAULT_BACKUPS)


def test_variable_names() -> None:
    assert variable("partitions") == "MANTIS_PARTITIONS"
    assert variable("otel_sdk_disabled") == "OTEL_SDK_DISABLED"
    assert variable("services") == "MANTIS_SERVICE_<STAGE>"
