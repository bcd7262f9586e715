"""One settings object, read from the environment once at start-up.

Why: Faust, the sinks and tracing all need a few knobs; reading ``os.environ``
in one place keeps the names documented (README, INTERFACE.md) and testable.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .stages import STAGES

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

#: Stage name -> default service name in Jaeger (``MANTIS_SERVICE_<STAGE>`` overrides one).
DEFAULT_SERVICES: dict[str, str] = {stage.name: stage.service for stage in STAGES}

_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"mantis-stream: {name}={raw!r} is not an integer") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"mantis-stream: {name}={raw!r} is not a number") from None


#: Query keys (DSNs, URLs) whose values are secrets: asyncpg's ``password``/``sslpassword``, InfluxDB 1.x's ``p``.
SECRET_QUERY_KEYS = frozenset({"password", "sslpassword", "p", "token", "secret", "api_key", "apikey"})
_KEYVALUE_SECRET = re.compile(r"(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")


def mask_url(url: str | None) -> str | None:
    """Return ``url`` with every password replaced by ``***`` (for logs, spans and ``config``).

    Masks the userinfo password up to the last ``@`` before the query (whatever
    characters it holds, so a badly quoted password is hidden too), secret
    query values (``?password=``, ``?sslpassword=``, ``?p=``) and, for a
    string that is no URL (libpq's ``key=value`` form), ``password=...``.
    """
    if not url:
        return url
    if "://" not in url:
        return _KEYVALUE_SECRET.sub(lambda m: m.group(1) + "***", url)
    scheme, _, rest = url.partition("://")
    base, question, query = rest.partition("?")
    userinfo, at, hostinfo = base.rpartition("@")
    if at and ":" in userinfo:
        base = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
    if question:
        items = []
        for item in query.split("&"):
            key, eq, _ = item.partition("=")
            items.append(f"{key}=***" if eq and key.strip().lower() in SECRET_QUERY_KEYS else item)
        query = "&".join(items)
    return f"{scheme}://{base}{question}{query}"


#: ``MANTIS_BROKER`` schemes Faust's Kafka transport answers to.
BROKER_SCHEMES = ("kafka", "aiokafka")


def check_broker_url(broker: str) -> str | None:
    """None when every comma-separated broker URL is ``[kafka://]host:port``, else what is wrong."""
    for url in broker.split(","):
        url = url.strip()
        if not url:
            return "an empty URL in the list"
        try:
            parts = urlsplit(url if "://" in url else f"kafka://{url}")
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            return f"{url!r}: {exc}"
        if parts.scheme not in BROKER_SCHEMES:
            return f"scheme {parts.scheme!r}: use kafka://host:port"
        if not parts.hostname:
            return f"{url!r}: no host"
    return None


def check_postgres_dsn(dsn: str) -> str | None:
    """None when asyncpg could use ``dsn``, else what is wrong (never echoing the password).

    asyncpg takes URLs only (``postgresql://`` or ``postgres://``, the
    password in the userinfo or in ``?password=``); libpq's ``key=value`` form
    is refused here rather than by asyncpg at the first write.
    """
    if "://" not in dsn:
        if "=" in dsn:
            return "the key=value form is not accepted (asyncpg takes URLs): use postgresql://user:password@host:port/database"
        return "expected postgresql://user:password@host:port/database"
    try:
        parts = urlsplit(dsn)
    except ValueError as exc:
        return f"cannot be parsed ({str(exc).replace(dsn, mask_url(dsn) or '')})"
    try:
        parse_qs(parts.query, strict_parsing=bool(parts.query))
    except ValueError:
        return "its query cannot be parsed (use ?key=value&key=value)"
    if parts.scheme not in ("postgresql", "postgres"):
        return f"scheme {parts.scheme!r}: use postgresql://"
    hostspec = parts.netloc.rpartition("@")[2]
    if not hostspec and "host=" not in parts.query:
        return "no host (postgresql://user:password@host:port/database)"
    for item in filter(None, hostspec.split(",")):  # asyncpg takes several host[:port], comma-separated
        port = item.rpartition("]")[2] if item.startswith("[") else item
        port = port.rpartition(":")[2] if ":" in port else ""
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            return f"port {port!r} is not a number from 1 to 65535"
    return None


def broker_is_local(broker: str) -> bool:
    """True when every broker URL points at this machine (use the Tansu profile)."""
    hosts = [urlsplit(u.strip() if "://" in u else f"kafka://{u.strip()}").hostname for u in broker.split(",")]
    return all(h in _LOOPBACK for h in hosts)


def load_config_file(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Read ``MANTIS_CONFIG_FILE`` and fill in the variables the environment does not set.

    The file holds ``NAME=VALUE`` lines (``#`` comments, optional quotes; ``.env``
    style), or a flat TOML table when it ends in ``.toml``; names are the
    environment's (``MANTIS_*``, ``OTEL_*``).  The environment wins over the file.
    Returns what the file set; a file that cannot be read or parsed stops with
    one line naming MANTIS_CONFIG_FILE.
    """
    path = path if path is not None else os.environ.get("MANTIS_CONFIG_FILE")
    if not path:
        return {}
    where = f"mantis-stream: MANTIS_CONFIG_FILE={str(path)!r}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"{where}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    values: dict[str, str] = {}
    if str(path).endswith(".toml"):
        import tomllib

        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SystemExit(f"{where}: {exc}") from None
        for name, value in table.items():
            if isinstance(value, (dict, list)):
                raise SystemExit(f"{where}: {name}: use a plain value (string, number, boolean)")
            values[name] = str(value).lower() if isinstance(value, bool) else str(value)
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, value = line.removeprefix("export ").partition("=")
            name, value = name.strip(), value.strip()
            if not sep or not name.replace("_", "").isalnum():
                raise SystemExit(f"{where}: line {lineno}: expected NAME=VALUE") from None
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values[name] = value
    for name in values:
        if not name.startswith(("MANTIS_", "OTEL_")):
            raise SystemExit(f"{where}: {name}: only MANTIS_* and OTEL_* variables belong here")
    applied = {}
    for name, value in values.items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    return applied


@dataclass(frozen=True)
class Settings:
    broker: str = "kafka://localhost:9092"
    app_id: str = "mantis-stream"
    #: ``local`` (short session timeouts, for Tansu) or ``production`` (Kafka defaults).
    broker_profile: str = "local"
    partitions: int = 4
    postgres_dsn: str | None = field(default=None, repr=False)
    influxdb_url: str | None = field(default=None, repr=False)
    sampling_strategies: Path = CONFIG_DIR / "sampling-strategy.json"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: Samples per vibration frame (FFT size) and hop between frames.
    frame_size: int = 2048
    #: Readings per window for scalar sensors.
    scalar_window: int = 10
    #: Events taken per batch by the batched agents, and the longest wait for a batch.
    batch_size: int = 500
    batch_within: float = 0.05
    #: Longest time (s) a model's changes stay unwritten to its changelog (0: after every batch).
    checkpoint_seconds: float = 1.0
    #: Largest accepted raw message (bytes) and waveform chunk (samples).
    max_message_bytes: int = 1_048_576
    max_waveform_samples: int = 65_536
    #: Bytes of the original payload a dead letter keeps (its length and SHA-256 always).
    dead_letter_payload_bytes: int = 65_536
    #: Work-order rules.
    rul_threshold_cycles: float = 30.0
    rul_threshold_seconds: float = 3600.0
    anomaly_persistence: int = 5
    #: Seconds the worker waits for an unreachable broker at start-up (0: one try, no wait).
    broker_wait: float = 300.0
    #: Bearer token the HTTP ingest requires (off when unset).
    ingest_token: str | None = field(default=None, repr=False)
    #: Longest a stop (SIGTERM) may take before the worker exits anyway (a broker gone keeps Faust waiting).
    stop_timeout: float = 20.0
    services: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SERVICES))
    #: Spans also written here as OTLP JSON lines (``mantis-stream trace``); read by tracing.setup.
    trace_file: str | None = None
    #: The settings file read before the environment (``MANTIS_CONFIG_FILE``).
    config_file: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        load_config_file()  # MANTIS_CONFIG_FILE: fills in what the environment does not set
        broker = os.environ.get("MANTIS_BROKER", cls.broker)
        profile = os.environ.get("MANTIS_BROKER_PROFILE") or ("local" if broker_is_local(broker) else "production")
        if profile not in ("local", "production"):
            raise SystemExit(f"mantis-stream: MANTIS_BROKER_PROFILE={profile!r}: use 'local' or 'production'")
        services = dict(DEFAULT_SERVICES)
        for stage in services:
            override = os.environ.get("MANTIS_SERVICE_" + stage.upper().replace("-", "_"))
            if override:
                services[stage] = override
        if (problem := check_broker_url(broker)) is not None:
            raise SystemExit(f"mantis-stream: MANTIS_BROKER={broker!r}: {problem}")
        made = cls(
            broker=broker,
            app_id=os.environ.get("MANTIS_APP_ID", cls.app_id),
            broker_profile=profile,
            partitions=_env_int("MANTIS_PARTITIONS", cls.partitions),
            postgres_dsn=os.environ.get("MANTIS_POSTGRES_DSN") or None,
            influxdb_url=os.environ.get("MANTIS_INFLUXDB_URL") or None,
            sampling_strategies=Path(os.environ.get("MANTIS_SAMPLING_STRATEGIES") or cls.sampling_strategies),
            web_host=os.environ.get("MANTIS_WEB_HOST", cls.web_host),
            web_port=_env_int("MANTIS_WEB_PORT", cls.web_port),
            frame_size=_env_int("MANTIS_FRAME_SIZE", cls.frame_size),
            scalar_window=_env_int("MANTIS_SCALAR_WINDOW", cls.scalar_window),
            batch_size=_env_int("MANTIS_BATCH_SIZE", cls.batch_size),
            batch_within=_env_float("MANTIS_BATCH_WITHIN", cls.batch_within),
            checkpoint_seconds=_env_float("MANTIS_CHECKPOINT_SECONDS", cls.checkpoint_seconds),
            max_message_bytes=_env_int("MANTIS_MAX_MESSAGE_BYTES", cls.max_message_bytes),
            max_waveform_samples=_env_int("MANTIS_MAX_WAVEFORM_SAMPLES", cls.max_waveform_samples),
            dead_letter_payload_bytes=_env_int("MANTIS_DEAD_LETTER_PAYLOAD_BYTES", cls.dead_letter_payload_bytes),
            rul_threshold_cycles=_env_float("MANTIS_RUL_THRESHOLD_CYCLES", cls.rul_threshold_cycles),
            rul_threshold_seconds=_env_float("MANTIS_RUL_THRESHOLD_SECONDS", cls.rul_threshold_seconds),
            anomaly_persistence=_env_int("MANTIS_ANOMALY_PERSISTENCE", cls.anomaly_persistence),
            broker_wait=_env_float("MANTIS_BROKER_WAIT", cls.broker_wait),
            ingest_token=os.environ.get("MANTIS_INGEST_TOKEN") or None,
            stop_timeout=_env_float("MANTIS_STOP_TIMEOUT", cls.stop_timeout),
            services=services,
            trace_file=os.environ.get("MANTIS_TRACE_FILE") or None,
            config_file=os.environ.get("MANTIS_CONFIG_FILE") or None,
        )
        made.check_ranges()
        return made

    def check_ranges(self) -> None:
        """Stop in one line on a count or duration no worker can run with (naming the variable)."""
        at_least = {
            "MANTIS_PARTITIONS": (self.partitions, 1), "MANTIS_BATCH_SIZE": (self.batch_size, 1),
            "MANTIS_FRAME_SIZE": (self.frame_size, 2), "MANTIS_SCALAR_WINDOW": (self.scalar_window, 1),
            "MANTIS_MAX_WAVEFORM_SAMPLES": (self.max_waveform_samples, 1),
            "MANTIS_ANOMALY_PERSISTENCE": (self.anomaly_persistence, 1),
            "MANTIS_BATCH_WITHIN": (self.batch_within, 0), "MANTIS_CHECKPOINT_SECONDS": (self.checkpoint_seconds, 0),
            "MANTIS_BROKER_WAIT": (self.broker_wait, 0), "MANTIS_STOP_TIMEOUT": (self.stop_timeout, 1),
            "MANTIS_WEB_PORT": (self.web_port, 0),
        }
        for name, (value, low) in at_least.items():
            if not value >= low:  # NaN too
                raise SystemExit(f"mantis-stream: {name}={value}: must be at least {low}")
        if self.web_port > 65535:
            raise SystemExit(f"mantis-stream: MANTIS_WEB_PORT={self.web_port}: must be at most 65535")

    def masked(self) -> dict[str, object]:
        """The effective settings with secrets masked, for logs and ``config``."""
        out: dict[str, object] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["postgres_dsn"] = mask_url(self.postgres_dsn)
        out["influxdb_url"] = mask_url(self.influxdb_url)
        out["ingest_token"] = "***" if self.ingest_token else None
        out["sampling_strategies"] = str(self.sampling_strategies)
        return out


@functools.cache
def current_settings() -> Settings:
    """This process's settings, read from the environment on first use (not at import)."""
    return Settings.from_env()
