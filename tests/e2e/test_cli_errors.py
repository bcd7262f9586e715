"""A user's mistakes end in one line on stderr, no traceback, a non-zero exit; no password is ever printed.

Why: each case below printed a 40 to 90 line traceback (or a password in
clear) when a new user tried it; the fix names the problem and the way out.
Every case runs the real console entry point in a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mantis_stream.demo.broker import free_port
from mantis_stream.settings import check_postgres_dsn, mask_url
from mantis_stream.tracing.attributes import clean_value

from conftest import ROOT, spawn_worker


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str = "", cwd: Path | None = None,
            timeout: float = 90) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MANTIS_", "OTEL_"))}
    full_env.update(OTEL_TRACES_EXPORTER="none", MANTIS_BROKER=f"kafka://127.0.0.1:{free_port()}")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "mantis_stream", *args], input=stdin, capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=timeout)


def assert_one_line(out: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Non-zero exit, no traceback, exactly one line on stderr holding each of ``expected``."""
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-2000:]
    assert "Traceback" not in text, text[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr[-3000:]
    for part in expected:
        assert part in lines[0], lines[0]
    return lines[0]


MISTAKES = [
    pytest.param(("produce",), {}, '{"a": 1}\n', ("mantis-stream produce:", "Kafka broker did not answer"), id="produce-no-broker"),
    pytest.param(("config",), {"MANTIS_BROKER": "kafak://127.0.0.1:9092"}, "", ("MANTIS_BROKER", "scheme 'kafak'", "kafka://"),
                 id="broker-scheme-typo"),
    pytest.param(("produce",), {"MANTIS_BROKER": "kafak://127.0.0.1:9092"}, "{}\n", ("MANTIS_BROKER", "scheme 'kafak'"),
                 id="broker-scheme-typo-produce"),
    pytest.param(("worker", "-l", "info"), {"MANTIS_BROKER_WAIT": "0"}, "", ("no Kafka broker answered", "MANTIS_BROKER_WAIT=0"),
                 id="worker-no-broker-no-wait"),
    pytest.param(("config",), {"MANTIS_PARTITIONS": "0"}, "", ("MANTIS_PARTITIONS=0", "at least 1"), id="zero-partitions"),
    pytest.param(("config",), {"MANTIS_BATCH_SIZE": "-5"}, "", ("MANTIS_BATCH_SIZE=-5", "at least 1"), id="negative-batch"),
    pytest.param(("worker",), {"MANTIS_BATCH_SIZE": "-5"}, "", ("MANTIS_BATCH_SIZE=-5",), id="negative-batch-worker"),
    pytest.param(("evaluate-rul", "--format", "cmapss", "no-such-test.txt", "no-such-rul.txt"), {}, "",
                 ("mantis-stream evaluate-rul:", "no-such-test.txt"), id="evaluate-rul-missing-file"),
    pytest.param(("evaluate-nab",), {}, "", ("mantis-stream evaluate-nab:", "give the NAB folder"), id="evaluate-nab-no-argument"),
    pytest.param(("evaluate-nab", "."), {}, "", ("not a NAB folder",), id="evaluate-nab-not-nab"),
    pytest.param(("config",), {"MANTIS_KAFKA_SECURITY_PROTOCOL": "SSL", "MANTIS_KAFKA_SSL_CAFILE": "/no/such/ca.pem"}, "",
                 ("MANTIS_KAFKA_SSL_CAFILE='/no/such/ca.pem': no such file",), id="missing-ca-file"),
    pytest.param(("worker",), {"MANTIS_RUL_MODEL": "/no/such/rul.json"}, "",
                 ("MANTIS_RUL_MODEL='/no/such/rul.json'", "No such file"), id="worker-missing-rul-model"),
    pytest.param(("worker",), {"MANTIS_POSTGRES_DSN": "host=h user=u password=SECRETPW dbname=db"}, "",
                 ("MANTIS_POSTGRES_DSN", "key=value form is not accepted"), id="worker-keyvalue-dsn"),
]


@pytest.mark.parametrize("args, env, stdin, expected", MISTAKES)
def test_each_mistake_is_one_line_and_a_failure(args: tuple[str, ...], env: dict[str, str], stdin: str,
                                                expected: tuple[str, ...]) -> None:
    line = assert_one_line(run_cli(*args, env=env, stdin=stdin), *expected)
    assert "SECRETPW" not in line


@pytest.mark.parametrize("content", [None, "{not json", '{"cmapss": 3}'], ids=["missing", "not-json", "wrong-shape"])
def test_a_bad_rul_model_stops_only_where_it_is_used(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "rul.json"
    if content is not None:
        path.write_text(content)
    env = {"MANTIS_RUL_MODEL": str(path)}
    for ok in (("--help",), ("config",)):
        out = run_cli(*ok, env=env)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert_one_line(run_cli("worker", env=env), f"MANTIS_RUL_MODEL={str(path)!r}")
    assert_one_line(run_cli("evaluate-rul", "--format", "cmapss", "x.txt", "y.txt", env=env), "cannot read RUL model")


def test_produce_refuses_a_line_that_is_not_json(broker) -> None:  # type: ignore[no-untyped-def]
    env = {"MANTIS_BROKER": broker.url}
    assert_one_line(run_cli("produce", env=env, stdin='{"a": 1}\nnot json\n{"b": 2}\n'),
                    "line 2 is not JSON", "1 message(s) sent before it", "--raw")
    ok = run_cli("produce", "--raw", env=env, stdin='{"a": 1}\nnot json\n')
    assert ok.returncode == 0 and ok.stderr.strip() == "produced 2 message(s) to mantis.readings", ok.stderr


@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT"])
def test_produce_with_a_security_protocol_the_broker_does_not_speak_fails_in_one_line(broker, protocol: str) -> None:  # type: ignore[no-untyped-def]
    env = {"MANTIS_BROKER": broker.url, "MANTIS_KAFKA_SECURITY_PROTOCOL": protocol,
           "MANTIS_KAFKA_SASL_USERNAME": "svc", "MANTIS_KAFKA_SASL_PASSWORD": "SECRETPW"}
    started = time.monotonic()
    line = assert_one_line(run_cli("produce", env=env, stdin='{"a": 1}\n'), "mantis-stream produce:")
    assert "MANTIS_KAFKA_SECURITY_PROTOCOL" in line and "SECRETPW" not in line
    assert time.monotonic() - started < 60


# ------------------------------------------------------------ DSNs: every form masked, key=value refused

PASSWORD = "SECRETPW9"
#: Forms asyncpg accepts, each carrying the password somewhere else.
ACCEPTED_DSNS = [
    f"postgresql://u:{PASSWORD}@127.0.0.1:1/db",
    f"postgresql://u@127.0.0.1:1/db?password={PASSWORD}",
    f"postgres://u:{PASSWORD}@127.0.0.1:1/db?sslmode=disable",
    f"postgresql://u:p%40{PASSWORD}@127.0.0.1:1/db",
    f"postgresql://u:{PASSWORD}@127.0.0.1:1,127.0.0.1:2/db",
    f"postgresql:///db?host=127.0.0.1&port=1&user=u&password={PASSWORD}",
    f"postgresql://u@127.0.0.1:1/db?sslmode=prefer&sslpassword={PASSWORD}&application_name=m",
]
REFUSED_DSNS = [
    f"host=127.0.0.1 port=1 user=u password={PASSWORD} dbname=db",
    f"host=127.0.0.1 user=u password='{PASSWORD} x' dbname=db",
]


@pytest.mark.parametrize("dsn", ACCEPTED_DSNS + REFUSED_DSNS)
def test_mask_url_and_span_attributes_hide_the_password(dsn: str) -> None:
    assert PASSWORD not in mask_url(dsn)
    assert PASSWORD not in str(clean_value(dsn))
    assert (check_postgres_dsn(dsn) is None) is (dsn in ACCEPTED_DSNS)


@pytest.mark.parametrize("dsn", ACCEPTED_DSNS)
def test_config_never_prints_an_accepted_dsn_password(dsn: str) -> None:
    for args in (("config",), ("config", "--json")):
        out = run_cli(*args, env={"MANTIS_POSTGRES_DSN": dsn})
        assert out.returncode == 0, out.stderr[-2000:]
        assert PASSWORD not in out.stdout + out.stderr
        assert "***" in out.stdout


@pytest.mark.parametrize("dsn", REFUSED_DSNS)
def test_config_refuses_the_keyvalue_form_in_one_line_without_the_password(dsn: str) -> None:
    out = run_cli("config", env={"MANTIS_POSTGRES_DSN": dsn})
    assert_one_line(out, "MANTIS_POSTGRES_DSN", "key=value form is not accepted")
    assert PASSWORD not in out.stdout + out.stderr


async def test_worker_logs_never_carry_a_dsn_password(broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One worker per accepted form, all at once: each logs its unreachable PostgreSQL, password masked."""
    workers = [spawn_worker(broker.url, tmp_path / f"worker-{i}.log", env={"MANTIS_POSTGRES_DSN": dsn, "MANTIS_BROKER_WAIT": "30"})
               for i, dsn in enumerate(ACCEPTED_DSNS)]
    try:
        deadline = time.monotonic() + 240
        while not all("not reachable at start" in w.log() and "PostgreSQL sink on" in w.log() for w in workers):
            for w in workers:
                assert w.proc.poll() is None, w.log()[-3000:]
            assert time.monotonic() < deadline, [w.log()[-1500:] for w in workers if "PostgreSQL sink on" not in w.log()]
            await asyncio.sleep(0.5)
    finally:
        for w in workers:
            w.stop()
    for w, dsn in zip(workers, ACCEPTED_DSNS):
        log = w.log()
        assert "storage: PostgreSQL sink on: " in log and "***" in log
        assert PASSWORD not in log, f"{dsn}: the password is in the worker's log"
