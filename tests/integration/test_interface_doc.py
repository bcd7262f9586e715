"""docs/interface.md is the outside contract: it must name what the code does.

Each check reads the page and the code independently, so a topic, a message
field, a command or an environment variable added to one side only fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mantis_stream import topics
from mantis_stream.errors import _record
from mantis_stream.models import records, schema
from mantis_stream.models.reading import InvalidReading
from mantis_stream.settings import Settings, variable

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "interface.md").read_text(encoding="utf-8")
#: Variables only the tests set (fault injection); not part of the contract.
TEST_HOOKS = {"MANTIS_TEST_FAULT"}
#: Commands Faust adds to every app; the rest of ``--help`` is ours.
FAUST_COMMANDS = {"agents", "clean-versions", "completion", "livecheck", "model", "models", "reset", "send", "tables",
                  "worker"}
#: Documented fields a builder's output has only sometimes (``headers_dropped``: set when a dead letter is sent).
WRITTEN_WHEN_NEEDED = {topics.DEAD_LETTERS: {"headers_dropped"}}
PUBLIC_TOPICS = {topics.READINGS, topics.FEATURES, topics.ANOMALIES, topics.RUL, topics.WORK_ORDERS,
                 topics.DEAD_LETTERS, topics.MAINTENANCE}


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, re.M | re.S)
    assert match, f"docs/interface.md has no section {title!r}"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return [row for row in rows[2:]]  # header and rule


def documented_fields(topic: str) -> set[str]:
    """Top-level field names of a topic's row: backticked names outside {...}."""
    for row in table_rows(section("Topics")):
        if row[0] == f"`{topic}`":
            top_level = re.sub(r"\{[^}]*\}", "", row[2])
            top_level = re.sub(r"\([^)]*\)", "", top_level)
            return set(re.findall(r"`([a-z_0-9]+)`", top_level))
    raise AssertionError(f"{topic} has no row in docs/interface.md")


def test_every_public_topic_is_documented_and_nothing_else() -> None:
    names = {row[0].strip("`") for row in table_rows(section("Topics"))}
    assert names == PUBLIC_TOPICS
    assert set(topics.ALL_TOPICS) - set(topics.BATCHED) == PUBLIC_TOPICS


def test_internal_topics_are_said_to_be_internal() -> None:
    assert all(name.startswith("mantis.internal.") for name in topics.BATCHED)
    assert "`mantis.internal.*`" in section("Topics")


FRAME = {"kind": "waveform", "asset_id": "A", "sensor_id": "S", "ts": 1.0e9, "cycle": 3}
FEATURES = records.features_message(FRAME, {"rms": 1.0})
MODEL: records.ModelRef = {"name": "m", "version": "1"}


@pytest.mark.parametrize(("topic", "message"), [
    (topics.FEATURES, FEATURES),
    (topics.ANOMALIES, records.anomaly_message(FEATURES, 0.1, 0.5, False, MODEL, True, "normal", [])),
    (topics.RUL, records.rul_message(FEATURES, 10.0, "cycles", 5.0, 20.0, 0.9, MODEL)),
    (topics.WORK_ORDERS, records.work_order_message("id", "A", "high", "r", "2026-01-01T00:00:00Z", 1.0, None, {})),
    (topics.MAINTENANCE, records.maintenance_message("A", "2026-01-01T00:00:00Z", note="bearing replaced", by="me")),
    (topics.DEAD_LETTERS, _record({"topic": "t", "partition": 0, "offset": 1}, b"x", "stage",
                                  InvalidReading("ts", "cannot read"), 1024)),
])
def test_message_fields_match_the_builders(topic: str, message: dict[str, object]) -> None:
    assert documented_fields(topic) - WRITTEN_WHEN_NEEDED.get(topic, set()) == set(message)


def reading_fields() -> set[str]:
    """The field names "A reading" lists (backticked, lower case)."""
    return set(re.findall(r"`([a-z_]+)`", section("A reading")))


@pytest.mark.parametrize("topic", sorted(PUBLIC_TOPICS))
def test_message_fields_match_the_schema(topic: str) -> None:
    documented = reading_fields() if topic == topics.READINGS else documented_fields(topic)
    assert documented == schema.fields(schema.SCHEMAS[topic])


@pytest.mark.parametrize(("topic", "key", "shape"), [
    (topics.ANOMALIES, "model", schema.ModelRef),
    (topics.RUL, "model", schema.ModelRef),
    (topics.ANOMALIES, "departures", schema.Departure),
    (topics.DEAD_LETTERS, "error", schema.DeadLetterError),
    (topics.DEAD_LETTERS, "source", schema.DeadLetterSource),
])
def test_nested_fields_match_the_schema(topic: str, key: str, shape: type) -> None:
    row = {row[0].strip("`"): row[2] for row in table_rows(section("Topics"))}[topic]
    braces = re.search(rf"`{key}` (?:\([^{{]*)?\{{([^}}]*)\}}", row)
    assert braces, f"{topic}: `{key}` has no {{...}} in docs/interface.md"
    assert set(re.findall(r"`([a-z_]+)`", braces.group(1))) == schema.fields(shape)


def test_nested_fields_are_documented() -> None:
    rows = {row[0].strip("`"): row[2] for row in table_rows(section("Topics"))}
    assert "`model` {`name`, `version`}" in rows[topics.ANOMALIES]
    assert set(MODEL) == {"name", "version"}
    dead = _record({"topic": "t", "partition": 0, "offset": 1}, b"x", "s", InvalidReading("ts", "bad"), 1024)
    for key in ("error", "source"):
        braces = re.search(rf"`{key}` \{{([^}}]*)\}}", rows[topics.DEAD_LETTERS])
        assert braces, key
        assert set(re.findall(r"`([a-z_]+)`", braces.group(1))) >= set(dead[key]), key


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "mantis_stream").rglob("*.py"))
    used = set(re.findall(r"\bMANTIS_[A-Z0-9_]*[A-Z0-9]\b", source))
    used |= {name for name in map(variable, Settings.model_fields) if name.startswith("MANTIS_") and "<" not in name}
    first_column = " ".join(row[0] for row in table_rows(section("Environment")))
    documented = set(re.findall(r"`(MANTIS_[A-Z0-9_<>]+)`", first_column))
    prefixes = {name.split("<")[0] for name in documented if "<" in name}
    missing = {name for name in used - TEST_HOOKS if name not in documented and not name.startswith(tuple(prefixes))}
    # Names the code builds from a prefix (``"MANTIS_KAFKA_" + key``) are covered by their full names.
    missing -= {name for name in missing if any(doc.startswith(name + "_") for doc in documented)}
    assert not missing, f"read by the code, missing from docs/interface.md: {sorted(missing)}"
    stale = {name for name in documented if "<" not in name and name not in used}
    assert not stale, f"documented but read nowhere: {sorted(stale)}"


def test_every_setting_is_documented() -> None:
    """Each Settings field's variable: a ``MANTIS_*`` one in the first column, an ``OTEL_*`` one in the section."""
    environment = section("Environment")
    first_column = " ".join(row[0] for row in table_rows(environment))
    names = {variable(field) for field in Settings.model_fields} - TEST_HOOKS
    assert "MANTIS_CONFIG_FILE" in names and "OTEL_SDK_DISABLED" in names
    missing = {name for name in names
               if f"`{name}`" not in (first_column if name.startswith("MANTIS_") else environment)}
    assert not missing, f"settings missing from docs/interface.md: {sorted(missing)}"


def test_every_documented_command_exists() -> None:
    helptext = subprocess.run([sys.executable, "-m", "mantis_stream", "--help"], capture_output=True, text=True,
                              timeout=120, check=True).stdout
    commands = set(re.findall(r"^  ([a-z][a-z-]+)\s", helptext.split("Commands:", 1)[1], re.M))
    documented = set(re.findall(r"`mantis-stream ([a-z][a-z-]+)", DOC))
    assert documented, "no commands found in docs/interface.md"
    assert documented <= commands, f"documented but not a command: {sorted(documented - commands)}"
    ours = (commands - FAUST_COMMANDS) | {"worker"}
    assert ours <= documented, f"commands missing from docs/interface.md: {sorted(ours - documented)}"


def test_readme_links_stay_inside_the_repository() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)", readme):
        if "://" in target:
            continue
        assert (ROOT / target).resolve().is_relative_to(ROOT), target
        assert (ROOT / target).exists(), target
    assert "../shared" not in readme


def test_no_default_path_points_outside_the_checkout() -> None:
    for path in (ROOT / "mantis_stream").rglob("*.py"):
        assert "../shared" not in path.read_text(encoding="utf-8"), path


def test_frame_builder_still_emits_the_documented_kinds() -> None:
    kinds = {records.waveform_frame("A", "S", 0.0, np.zeros(4), 1.0, None)["kind"],
             records.window_frame("A", "S", 0.0, [1.0], None)["kind"],
             records.row_frame("A", "S", 0.0, {"c": 1.0}, None)["kind"]}
    assert kinds == set(re.findall(r"`(waveform|window|row)`", section("Topics")))
