"""``create_app(settings)`` is the composition root: importing ``mantis_stream.app`` builds and reads nothing."""

from __future__ import annotations

import os
import subprocess
import sys


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **env})


def test_importing_the_app_module_builds_no_app_and_reads_no_setting() -> None:
    code = ("import importlib; m = importlib.import_module('mantis_stream.app'); "
            "print(sorted(name for name in ('app', 'settings', 'rul_topic') if name in vars(m)))")
    proc = run(code, MANTIS_PARTITIONS="many")  # a setting that stops whatever reads it
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
    used = run("import mantis_stream.app as m; m.app", MANTIS_PARTITIONS="many")
    assert used.returncode != 0 and "MANTIS_PARTITIONS" in used.stderr, used.stderr[-2000:]


def test_create_app_builds_the_app_of_the_settings_it_is_given() -> None:
    code = ("from mantis_stream.app import create_app, create_topics; from mantis_stream.settings import Settings; "
            "from mantis_stream.metrics import installed; "
            "s = Settings(app_id='composed', partitions=3); a = create_app(s); t = create_topics(a, s); "
            "print(a.conf.id, t['rul_topic'].get_topic_name(), t['rul_topic'].partitions, installed(a) is not None, "
            "len(a.agents))")
    proc = run(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["composed", "mantis.rul", "3", "True", "0"]


def test_the_fetch_wait_setting_reaches_the_workers_consumer_on_the_local_profile_only() -> None:
    code = ("import asyncio; from mantis_stream.app import create_app; from mantis_stream.settings import Settings\n"
            "async def main():\n"
            "    a = create_app(Settings(fetch_max_wait_ms=45, broker_profile='{profile}', broker='kafka://127.0.0.1:9'))\n"
            "    c = a.consumer._thread._create_worker_consumer(a.transport)\n"
            "    print(c._fetch_max_wait_ms)\n"
            "    await c.stop()\n"
            "asyncio.run(main())")
    waits = {}
    for profile in ("local", "production"):
        proc = run(code.format(profile=profile))
        assert proc.returncode == 0, proc.stderr[-2000:]
        waits[profile] = proc.stdout.split()[-1]
    assert waits == {"local": "45", "production": "1500"}  # Kafka answers a fetch when data comes: Faust's wait stays
