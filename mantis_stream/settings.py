"""One settings object: every variable the worker reads, parsed and checked in one place.

Why: Faust, Kafka's security, the sinks and tracing all need knobs; reading
them here (pydantic-settings, from the environment and ``MANTIS_CONFIG_FILE``)
keeps the names documented (docs/interface.md, checked by a test), the parse
errors one line naming the variable, and the secrets in ``SecretStr`` so no
repr, log or ``config`` output shows them.  Building a :class:`Settings`
changes nothing; :func:`apply_config_file` is the one place that writes to
``os.environ``, for the readers that see only the environment.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

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
    """The variables ``MANTIS_CONFIG_FILE`` (or ``path``) sets; the environment is left alone.

    The file holds ``NAME=VALUE`` lines (``#`` comments, optional quotes; ``.env``
    style), or a flat TOML table when it ends in ``.toml``; names are the
    environment's (``MANTIS_*``, ``OTEL_*``), and the environment wins over the
    file (:class:`Settings`, :func:`apply_config_file`).  A file that cannot be
    read or parsed stops with one line naming MANTIS_CONFIG_FILE.
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
    return values


ENV_PREFIX = "MANTIS_"
#: The per-stage service-name variables, as errors and docs name them.
SERVICE_VARIABLE = "MANTIS_SERVICE_<STAGE>"

Secret = SecretStr | None
#: A comma-separated list (``a,b``), not JSON.
CommaList = Annotated[tuple[str, ...], NoDecode]


class _Variables(EnvSettingsSource):
    """Fields from a mapping of variable names (the environment, or the settings file's lines)."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str]) -> None:
        self._variables = variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name if self.case_sensitive else name.lower(): value for name, value in self._variables.items()
                if not (self.env_ignore_empty and value == "")}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name == "services":  # from MANTIS_SERVICE_<STAGE> (_ServiceNames), not from JSON
            return None, field_name, False
        return super().get_field_value(field, field_name)


class _ServiceNames(PydanticBaseSettingsSource):
    """``services``: the default service names with each ``MANTIS_SERVICE_<STAGE>`` that is set."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._variables = variables

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        overrides = {stage: self._variables.get(service_variable(stage)) for stage in DEFAULT_SERVICES}
        if not any(overrides.values()):
            return {}
        return {"services": {stage: overrides[stage] or name for stage, name in DEFAULT_SERVICES.items()}}


def service_variable(stage: str) -> str:
    """``MANTIS_SERVICE_<STAGE>`` for one stage: ``anomaly-detection`` -> ``MANTIS_SERVICE_ANOMALY_DETECTION``."""
    return "MANTIS_SERVICE_" + stage.upper().replace("-", "_")


def _field(info: ValidationInfo) -> str:
    assert info.field_name is not None  # field validators always have one
    return info.field_name


def _choices(settings_cls: type[BaseSettings], info: ValidationInfo) -> tuple[str, ...]:
    """The values a ``Literal`` field takes."""
    return get_args(settings_cls.model_fields[_field(info)].annotation)


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class Settings(BaseSettings):
    """Every setting of the worker and the commands, from ``MANTIS_*`` (and a few ``OTEL_*``) variables.

    ``Settings()`` reads the environment, then ``MANTIS_CONFIG_FILE`` for what
    the environment does not set (keyword arguments win over both), and raises
    ``ValidationError`` whose messages name the variable;
    :meth:`from_env` turns that into one line per problem.  An empty variable
    counts as unset.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid", populate_by_name=True,
    )

    broker: str = "kafka://localhost:9092"
    app_id: str = "mantis-stream"
    #: ``local`` (short session timeouts, for Tansu) or ``production`` (Kafka defaults); by default
    #: ``local`` when every broker is on this machine.
    broker_profile: Literal["local", "production"] = "local"
    partitions: int = Field(default=4, ge=1)
    postgres_dsn: Secret = None
    influxdb_url: Secret = None
    sampling_strategies: Path = CONFIG_DIR / "sampling-strategy.json"
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)
    #: Samples per vibration frame (FFT size) and hop between frames.
    frame_size: int = Field(default=2048, ge=2)
    #: Readings per window for scalar sensors.
    scalar_window: int = Field(default=10, ge=1)
    #: Events taken per batch by the batched agents, and the longest wait for a batch.
    batch_size: int = Field(default=500, ge=1)
    batch_within: float = Field(default=0.05, ge=0)
    #: Longest wait (ms) of the worker's fetches on the ``local`` profile: Tansu answers a fetch only when it ends,
    #: so each hop waits up to this long (Kafka answers as soon as data arrives; ``production`` keeps Faust's).
    fetch_max_wait_ms: int = Field(default=30, ge=1)
    #: Longest time (s) a model's changes stay unwritten to its changelog (0: after every batch).  At a steady rate
    #: below a write per asset per interval, every frame wrote its ~16 kB detector: a fifth of the worker's CPU at 1 s.
    checkpoint_seconds: float = Field(default=5.0, ge=0)
    #: Largest accepted raw message (bytes) and waveform chunk (samples); :mod:`.limits` checks the pair.
    max_message_bytes: int = 1_048_576
    max_waveform_samples: int = Field(default=65_536, ge=1)
    #: Bytes of the original payload a dead letter keeps (its length and SHA-256 always).
    dead_letter_payload_bytes: int = 65_536
    #: Work-order rules.
    rul_threshold_cycles: float = 30.0
    rul_threshold_seconds: float = 3600.0
    anomaly_persistence: int = Field(default=5, ge=1)
    #: Seconds the worker waits for an unreachable broker at start-up (0: one try, no wait).
    broker_wait: float = Field(default=300.0, ge=0)
    #: Bearer token the HTTP ingest requires (off when unset).
    ingest_token: Secret = None
    #: Longest a stop (SIGTERM) may take before the worker exits anyway (a broker gone keeps Faust waiting).
    stop_timeout: float = Field(default=20.0, ge=1)
    #: Stage -> service name in Jaeger (``MANTIS_SERVICE_<STAGE>`` overrides one).
    services: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SERVICES))
    #: The settings file read after the environment (``MANTIS_CONFIG_FILE``).
    config_file: str | None = None
    #: The RUL model file ``train-rul`` wrote (the shipped model when unset).
    rul_model: str | None = None
    #: Fault injection for the tests: ``agent:text[:times]``, comma-separated.
    test_fault: str | None = None

    # Kafka security (kafka.broker_credentials maps them to Faust's credentials).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: Secret = None

    # Tracing.
    #: Spans also written here as OTLP JSON lines (``mantis-stream trace``).
    trace_file: str | None = None
    #: The trace file's size cap (0: none) and rotated files kept; the span export process reads the variables.
    trace_file_max_bytes: int = Field(default=64 << 20, ge=0)
    trace_file_backups: int = Field(default=1, ge=0)
    #: More attribute keys (globs) kept off spans, besides the built-in deny-list.
    trace_deny_attributes: CommaList = ()
    #: ``process``: spans are encoded and exported by a child process; ``thread``: in the worker.
    tracing_export: Literal["process", "thread"] = "process"
    #: Seconds a stopping worker spends exporting its last spans.
    tracing_shutdown_timeout: float = Field(default=3.0, ge=0)
    #: The OpenTelemetry variables the project reads itself (the SDK reads the rest, and these too).
    otel_sdk_disabled: bool = Field(default=False, validation_alias="OTEL_SDK_DISABLED")
    otel_traces_exporter: str | None = Field(default=None, validation_alias="OTEL_TRACES_EXPORTER")
    otel_traces_sampler: str | None = Field(default=None, validation_alias="OTEL_TRACES_SAMPLER")
    otel_exporter_otlp_headers: Secret = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_HEADERS")
    otel_exporter_otlp_traces_headers: Secret = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_HEADERS")
    otel_span_attribute_count_limit: int = Field(default=64, ge=0, validation_alias="OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT")
    otel_span_event_count_limit: int = Field(default=32, ge=0, validation_alias="OTEL_SPAN_EVENT_COUNT_LIMIT")
    #: Unset: at least 128, and a batch's worth (a batch span links every record's trace).
    otel_span_link_count_limit: int | None = Field(default=None, ge=0, validation_alias="OTEL_SPAN_LINK_COUNT_LIMIT")
    #: Unset: four times the longest string attribute the project writes.
    otel_attribute_value_length_limit: int | None = Field(
        default=None, ge=0, validation_alias="OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        given = init_settings.init_kwargs if isinstance(init_settings, InitSettingsSource) else {}
        path = given.get("config_file") or os.environ.get("MANTIS_CONFIG_FILE") or None
        from_file = load_config_file(path) if path else {}
        environment = dict(os.environ)
        return (
            init_settings,
            _Variables(settings_cls, environment),
            _Variables(settings_cls, from_file),
            _ServiceNames(settings_cls, {**from_file, **environment}),
        )

    @model_validator(mode="before")
    @classmethod
    def _profile_from_broker(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("broker_profile"):
            broker = data.get("broker") or cls.model_fields["broker"].default
            try:
                local = broker_is_local(broker)
            except ValueError:  # the broker's own check names the problem
                local = False
            data = {**data, "broker_profile": "local" if local else "production"}
        return data

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        if (problem := check_broker_url(value)) is not None:
            raise ValueError(f"MANTIS_BROKER={value!r}: {problem}")
        return value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_choice(cls, value: Any, info: ValidationInfo) -> Any:
        """Any case; anything else is refused naming the choices."""
        choices, value = _choices(cls, info), _upper(value)
        if value not in choices:
            raise ValueError(f"{variable(_field(info))}={value!r}: use one of {', '.join(choices)}")
        return value

    @field_validator("tracing_export", "broker_profile", mode="before")
    @classmethod
    def _lower_choice(cls, value: Any, info: ValidationInfo) -> Any:
        choices, value = _choices(cls, info), _lower(value)
        if value not in choices:
            raise ValueError(f"{variable(_field(info))}={value!r}: use {' or '.join(map(repr, choices))}")
        return value

    @field_validator("trace_deny_attributes", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("otel_sdk_disabled", mode="before")
    @classmethod
    def _sdk_true(cls, value: Any) -> Any:
        """``true`` (any case) disables, anything else does not: what the OpenTelemetry SDK does."""
        return _lower(value) == "true" if isinstance(value, str) else value

    @classmethod
    def from_env(cls) -> Settings:
        """The settings, or SystemExit with one line per problem, each naming its variable."""
        try:
            return cls()
        except ValidationError as exc:
            raise SystemExit("\n".join(f"mantis-stream: {line}" for line in describe(exc))) from None

    def masked(self) -> dict[str, object]:
        """The effective settings with secrets masked, for logs and ``config``."""
        out: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = mask_secret(name, value.get_secret_value())
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out


def mask_headers(value: str) -> str:
    """``k1=v1,k2=v2`` -> ``k1=***,k2=***`` (the header names stay readable)."""
    parts = []
    for item in value.split(","):
        name, sep, _ = item.partition("=")
        parts.append(f"{name.strip()}=***" if sep else "***")
    return ",".join(parts)


def mask_secret(name: str, value: str) -> str:
    """A secret field's value as logs and ``config`` show it: URLs keep all but the password, headers their names."""
    if name.endswith("headers"):
        return mask_headers(value)
    if name in ("postgres_dsn", "influxdb_url"):
        return mask_url(value) or ""
    return "***"


def secret(value: SecretStr | None) -> str | None:
    """The plain text of an optional secret setting, for the one place that uses it."""
    return value.get_secret_value() if value is not None else None


def variable(field: str) -> str:
    """The environment variable a :class:`Settings` field is read from."""
    if field == "services":
        return SERVICE_VARIABLE
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else ENV_PREFIX + field.upper()


#: The fields that hold secrets (``SecretStr``).
SECRET_FIELDS = frozenset(name for name, info in Settings.model_fields.items() if SecretStr in get_args(info.annotation))
_ALIASES = {info.validation_alias: name for name, info in Settings.model_fields.items()
            if isinstance(info.validation_alias, str)}


def describe(error: ValidationError) -> list[str]:
    """One line per problem of a :class:`Settings` ``ValidationError``, naming the variable (secrets masked)."""
    lines = []
    for item in error.errors(include_url=False):
        loc = str(item["loc"][0]) if item["loc"] else ""
        field = _ALIASES.get(loc, loc)
        name = variable(field) if field in Settings.model_fields else loc
        raw = item.get("input")
        if field in SECRET_FIELDS:
            raw = mask_secret(field, str(raw))
        kind, ctx = item["type"], item.get("ctx", {})
        if kind == "value_error":
            lines.append(str(ctx.get("error", item["msg"])))
        elif kind in ("int_parsing", "int_from_float", "int_type"):
            lines.append(f"{name}={raw!r} is not an integer")
        elif kind in ("float_parsing", "float_type"):
            lines.append(f"{name}={raw!r} is not a number")
        elif kind == "greater_than_equal":
            lines.append(f"{name}={raw}: must be at least {ctx['ge']:g}")
        elif kind == "less_than_equal":
            lines.append(f"{name}={raw}: must be at most {ctx['le']:g}")
        elif kind == "literal_error":
            lines.append(f"{name}={raw!r}: use {ctx['expected']}")
        else:
            lines.append(f"{name}={raw!r}: {item['msg']}")
    return lines


def environment_with_file(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment as the worker sees it after :func:`apply_config_file`: the file's variables under it."""
    environ = os.environ if environ is None else environ
    return {**(load_config_file(settings.config_file) if settings.config_file else {}), **environ}


def apply_config_file(settings: Settings) -> dict[str, str]:
    """Put the settings file's variables the environment does not set into ``os.environ``; return them.

    Why: the OpenTelemetry SDK reads only the environment (``OTEL_*``: endpoint,
    headers, propagators, batch processor), and so do the span export process
    and worker processes this one starts.  Called once at worker start, by the
    code that builds the app; building :class:`Settings` writes nothing.
    """
    if not settings.config_file:
        return {}
    added = {name: value for name, value in load_config_file(settings.config_file).items() if name not in os.environ}
    os.environ.update(added)
    return added


@functools.cache
def current_settings() -> Settings:
    """This process's settings, read from the environment on first use (not at import)."""
    return Settings.from_env()
