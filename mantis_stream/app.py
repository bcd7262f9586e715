"""The Faust application: broker, codecs, topics and the sensors, built by :func:`create_app`.

Importing this module builds nothing.  Its ``app``, ``settings`` and
``*_topic`` attributes are this process's app, made from
:func:`~mantis_stream.settings.current_settings` when one of them is first
used; the agents and the app's commands register on it when
:mod:`mantis_stream.pipeline` imports them, and ``faust -A mantis_stream
worker`` gets the app from there.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import faust

from . import (
    codecs,  # noqa: F401  (registers the "orjson" codec)
    limits,
    metrics,
    tracing,
)
from . import topics as names
from ._compat.check import check_tested_versions
from .kafka import broker_credentials, broker_urls, limit_fetch_wait, profile_options
from .recovery import hold_deliveries_until_seek, read_highwaters_from_fetch
from .runtime import bound_stop_time, check_at_worker_start, run_start_checks, tune_garbage_collector
from .settings import Settings, apply_config_file, current_settings

__all__ = ["TOPICS", "create_app", "create_topics"]

_LOG_FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s] [trace_id=%(trace_id)s span_id=%(span_id)s] {}%(message)s %(extra)s"
#: Faust's own log set-up, with the trace and span ids of the current span on every line.
LOGGING = {
    "merge": True,
    "formatters": {
        "default": {"()": "mode.utils.logging.DefaultFormatter", "format": _LOG_FORMAT.format("")},
        "colored": {"()": "mode.utils.logging.ExtensionFormatter", "format": _LOG_FORMAT.format("%(log_color)s"),
                    "log_colors": {"DEBUG": "blue", "INFO": "white", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold_red"}},
    },
}

#: Attribute -> (topic name, raw bytes values).  The batched hops' values are built and read by agents._batch.
TOPICS: dict[str, tuple[str, bool]] = {
    "readings_topic": (names.READINGS, True),
    "readings_keyed_topic": (names.READINGS_KEYED, True),
    "frames_topic": (names.FRAMES, True),
    "feature_batches_topic": (names.FEATURE_BATCHES, True),
    "assessments_topic": (names.ASSESSMENTS, True),
    "features_topic": (names.FEATURES, False),
    "anomalies_topic": (names.ANOMALIES, False),
    "rul_topic": (names.RUL, False),
    "work_orders_topic": (names.WORK_ORDERS, False),
    "dead_letters_topic": (names.DEAD_LETTERS, False),
    "maintenance_topic": (names.MAINTENANCE, False),
}

if TYPE_CHECKING:  # made by __getattr__ on first use
    app: faust.App
    settings: Settings
    readings_topic: faust.TopicT
    readings_keyed_topic: faust.TopicT
    frames_topic: faust.TopicT
    feature_batches_topic: faust.TopicT
    assessments_topic: faust.TopicT
    features_topic: faust.TopicT
    anomalies_topic: faust.TopicT
    rul_topic: faust.TopicT
    work_orders_topic: faust.TopicT
    dead_letters_topic: faust.TopicT
    maintenance_topic: faust.TopicT


def create_app(settings: Settings) -> faust.App:
    """The app for ``settings``: broker, codecs, web server, the tracing and metrics sensors, start checks.

    It patches Faust for the process (see recovery.py, kafka.py, runtime.py):
    one app per process.  Registers no agent (:mod:`mantis_stream.pipeline` does).
    """
    limits.check(settings)
    apply_config_file(settings)  # the OpenTelemetry SDK and the span export process read only the environment
    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings.broker),
        broker_credentials=broker_credentials(),
        value_serializer="orjson",
        key_serializer="raw",
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        store="memory://",
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        logging_config=LOGGING,
        producer_max_request_size=limits.producer_max_request_size(settings),
        producer_linger=0.005,  # a few ms of batching: far fewer produce requests per record
        consumer_max_fetch_size=limits.consumer_max_fetch_size(settings),
        **profile_options(settings.broker_profile),
    )
    app.on_worker_init.connect(run_start_checks, weak=False)  # before the agents' broker wait: see runtime.py
    check_at_worker_start(check_tested_versions)  # the libraries whose internals _compat reaches into
    hold_deliveries_until_seek()  # before any agent runs: see recovery.py
    if settings.broker_profile == "local":
        limit_fetch_wait(settings.fetch_max_wait_ms)  # Tansu holds every fetch for its whole wait
        read_highwaters_from_fetch()  # Tansu's ListOffsets can be one record short: see recovery.py
    tracing.install(app, settings)
    metrics.install(app, settings)  # Prometheus: sensor + GET /metrics
    app.on_worker_init.connect(tune_garbage_collector, weak=False)  # worker processes only: see runtime.py
    bound_stop_time(settings.stop_timeout)
    return app


def create_topics(app: faust.App, settings: Settings) -> dict[str, faust.TopicT]:
    """The pipeline's topics on ``app``, by attribute name (:data:`TOPICS`)."""
    return {
        attribute: app.topic(
            name,
            partitions=settings.partitions,
            internal=True,  # Faust creates it with our partition count when missing
            value_serializer="raw" if raw else "orjson",
            key_serializer="raw",
        )
        for attribute, (name, raw) in TOPICS.items()
    }


@functools.cache
def _process_app() -> dict[str, Any]:
    settings = current_settings()
    app = create_app(settings)
    return {"settings": settings, "app": app, **create_topics(app, settings)}


def __getattr__(name: str) -> Any:
    if name == "app" or name == "settings" or name in TOPICS:
        made = _process_app()
        globals().update(made)  # later lookups are plain attributes
        return made[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
