"""``mantis-stream config``: effective settings and OTEL_* variables, secrets masked; settings file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mantis_stream.commands.config import check_influx_url, check_postgres_dsn, environment, mask_headers, problems
from mantis_stream.settings import Settings, apply_config_file, load_config_file, mask_url

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("s3cret-pw", "abc123key", "tok-xyz", "sasl-pw")


def run_config(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MANTIS_", "OTEL_"))}
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "mantis_stream", "config", *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=120)


SECRET_ENV = {
    "MANTIS_POSTGRES_DSN": "postgresql://mantis:s3cret-pw@db.example:5432/mantis",
    "MANTIS_INGEST_TOKEN": "tok-xyz",
    "MANTIS_KAFKA_SASL_PASSWORD": "sasl-pw",
    "MANTIS_KAFKA_SASL_USERNAME": "svc-mantis",
    "OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc123key,x-team=ops",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
    "OTEL_TRACES_EXPORTER": "none",
    "MANTIS_PARTITIONS": "8",
}


def test_config_prints_every_setting_with_secrets_masked():
    out = run_config(env=SECRET_ENV)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert lines["partitions"] == "8" and lines["broker"] == "kafka://localhost:9092"
    assert lines["postgres_dsn"] == "postgresql://mantis:***@db.example:5432/mantis"
    assert lines["ingest_token"] == "***"
    assert lines["services.preprocessing"] == "mantis-preprocessing"
    assert lines["OTEL_EXPORTER_OTLP_HEADERS"] == "api-key=***,x-team=***"
    assert lines["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4317"
    assert lines["MANTIS_KAFKA_SASL_PASSWORD"] == "***" and lines["MANTIS_KAFKA_SASL_USERNAME"] == "svc-mantis"
    for secret in SECRETS:
        assert secret not in out.stdout + out.stderr


def test_config_json_and_settings_file(tmp_path):
    settings_file = tmp_path / "mantis.env"
    settings_file.write_text(
        "# plant 7\nMANTIS_APP_ID=plant-7\nexport MANTIS_PARTITIONS=2\nOTEL_EXPORTER_OTLP_HEADERS='authorization=Basic abc123key'\n"
    )
    out = run_config("--json", env={**SECRET_ENV, "MANTIS_CONFIG_FILE": str(settings_file)})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["settings"]["app_id"] == "plant-7"  # from the file
    assert data["settings"]["partitions"] == 8  # the environment wins over the file
    assert data["settings"]["config_file"] == str(settings_file)
    assert data["environment"]["OTEL_EXPORTER_OTLP_HEADERS"] == "api-key=***,x-team=***"  # environment wins
    assert data["settings"]["ingest_token"] == "***"
    for secret in SECRETS:
        assert secret not in out.stdout


def test_bad_dsn_is_one_line_naming_the_variable():
    out = run_config(env={"MANTIS_POSTGRES_DSN": "postgresql://mantis:s3cret-pw@db:54x2/mantis", "OTEL_TRACES_EXPORTER": "none"})
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "mantis-stream config: MANTIS_POSTGRES_DSN: port '54x2' is not a number from 1 to 65535"
    ]
    assert "postgres_dsn=postgresql://mantis:***@db:54x2/mantis" in out.stdout
    assert "s3cret-pw" not in out.stdout + out.stderr


def test_unreadable_settings_file_is_one_line():
    out = run_config(env={"MANTIS_CONFIG_FILE": "/nonexistent/mantis.env"})
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == (
        "mantis-stream: MANTIS_CONFIG_FILE='/nonexistent/mantis.env': cannot read it (No such file or directory)"
    )


# -- the pieces ------------------------------------------------------------------------------


def test_mask_helpers():
    assert mask_headers("a=1,b = 2") == "a=***,b=***"
    assert mask_url("http://user:pw@[::1]:8086/db") == "http://user:***@[::1]:8086/db"
    env = environment({"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "k=v", "OTEL_SERVICE_NAME": "x", "HOME": "/root",
                       "OTEL_EXPORTER_OTLP_ENDPOINT": "https://u:pw@collector:4318"})
    assert env == {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://u:***@collector:4318",
                   "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "k=***", "OTEL_SERVICE_NAME": "x"}


@pytest.mark.parametrize("dsn, ok", [
    ("postgresql://mantis:pw@localhost:5432/mantis", True),
    ("postgres://mantis@db/mantis", True),
    ("postgresql://u@127.0.0.1:1/db?password=pw", True),
    ("postgresql:///mantis?host=/run/postgresql&password=pw", True),
    ("host=db dbname=mantis user=mantis", False),  # libpq's key=value form: asyncpg refuses it
    ("postgresql://u@h/db?password", False),
    ("mysql://u:p@h/d", False),
    ("postgresql:///mantis", False),
    ("localhost:5432", False),
    ("postgresql://u:p@h:99999999/d", False),
])
def test_check_postgres_dsn(dsn, ok):
    assert (check_postgres_dsn(dsn) is None) is ok


def test_problems_name_each_variable(tmp_path):
    bad_strategies = tmp_path / "s.json"
    bad_strategies.write_text("{not json")
    s = Settings(postgres_dsn="nonsense", influxdb_url="http://influx:8086", sampling_strategies=bad_strategies)
    found = problems(s, {"OTEL_TRACES_EXPORTER": "jaeger", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"})
    assert [line.split(":")[0].split("=")[0] for line in found] == [
        "MANTIS_POSTGRES_DSN", "MANTIS_INFLUXDB_URL", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL",
        "MANTIS_SAMPLING_STRATEGIES",
    ]
    assert check_influx_url("http://influx:8086/mantis") is None
    assert problems(Settings(), {}) == []


def test_settings_file_formats(tmp_path, monkeypatch):
    for name in ("MANTIS_APP_ID", "MANTIS_BATCH_SIZE", "OTEL_SDK_DISABLED"):
        monkeypatch.setenv(name, "")  # recorded, so what the file sets is undone after the test
        monkeypatch.delenv(name)
    toml = tmp_path / "m.toml"
    toml.write_text('MANTIS_APP_ID = "from-toml"\nMANTIS_BATCH_SIZE = 7\nOTEL_SDK_DISABLED = true\n')
    monkeypatch.setenv("MANTIS_CONFIG_FILE", str(toml))
    s = Settings.from_env()
    assert (s.app_id, s.batch_size, s.otel_sdk_disabled) == ("from-toml", 7, True)
    assert "OTEL_SDK_DISABLED" not in os.environ  # reading the settings writes nothing
    assert apply_config_file(s) == {"MANTIS_APP_ID": "from-toml", "MANTIS_BATCH_SIZE": "7", "OTEL_SDK_DISABLED": "true"}
    assert os.environ["OTEL_SDK_DISABLED"] == "true"  # for the SDK, at worker start
    monkeypatch.setenv("MANTIS_BATCH_SIZE", "9")  # the environment wins
    assert Settings.from_env().batch_size == 9
    bad = tmp_path / "bad.env"
    bad.write_text("MANTIS_APP_ID=x\nthis is not a setting\n")
    with pytest.raises(SystemExit, match=r"line 2: expected NAME=VALUE"):
        load_config_file(bad)
    other = tmp_path / "other.env"
    other.write_text("PATH=/evil\n")
    with pytest.raises(SystemExit, match=r"PATH: only MANTIS_\* and OTEL_\* variables"):
        load_config_file(other)


def test_building_the_app_puts_the_settings_file_into_the_environment(tmp_path):
    """The OpenTelemetry SDK and the span export process see only the environment: the app puts the file there."""
    settings_file = tmp_path / "mantis.env"
    settings_file.write_text("OTEL_PROPAGATORS=b3\nMANTIS_APP_ID=from-file\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MANTIS_", "OTEL_"))}
    env.update(MANTIS_CONFIG_FILE=str(settings_file), MANTIS_APP_ID="from-env")
    code = ("import os, mantis_stream.app as m; m.app  # building the app applies the settings file\n"
            "print(os.environ['OTEL_PROPAGATORS'], os.environ['MANTIS_APP_ID'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["b3", "from-env"]  # the environment still wins
