"""The Faust application: broker, codecs, topics and the tracing sensor.

The agents and the app's commands register on :data:`app` when
:mod:`mantis_stream.pipeline` imports them; ``faust -A mantis_stream worker``
gets the app from there.
"""

from __future__ import annotations

import faust

from . import (
    codecs,  # noqa: F401  (registers the "orjson" codec)
    limits,
    metrics,
    tracing,
)
from . import topics as names
from .kafka import LOCAL_FETCH_MAX_WAIT_MS, broker_credentials, broker_urls, limit_fetch_wait, profile_options
from .recovery import hold_deliveries_until_seek, read_highwaters_from_fetch
from .runtime import bound_stop_time, run_start_checks, tune_garbage_collector
from .settings import apply_config_file, current_settings

settings = current_settings()
apply_config_file(settings)  # the OpenTelemetry SDK and the span export process read only the environment
limits.check(settings)

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
hold_deliveries_until_seek()  # before any agent runs: see recovery.py
if settings.broker_profile == "local":
    limit_fetch_wait(LOCAL_FETCH_MAX_WAIT_MS)  # Tansu holds every fetch for its whole wait
    read_highwaters_from_fetch()  # Tansu's ListOffsets can be one record short: see recovery.py
tracing.install(app, settings)
metrics.install(app, settings)  # Prometheus: sensor + GET /metrics
app.on_worker_init.connect(tune_garbage_collector, weak=False)  # worker processes only: see runtime.py
bound_stop_time(settings.stop_timeout)


def _topic(name: str, *, raw: bool = False) -> faust.TopicT:
    return app.topic(
        name,
        partitions=settings.partitions,
        internal=True,  # Faust creates it with our partition count when missing
        value_serializer="raw" if raw else "orjson",
        key_serializer="raw",
    )


readings_topic = _topic(names.READINGS, raw=True)
# Batched hops: values are bytes built and read by agents._batch.
readings_keyed_topic = _topic(names.READINGS_KEYED, raw=True)
frames_topic = _topic(names.FRAMES, raw=True)
feature_batches_topic = _topic(names.FEATURE_BATCHES, raw=True)
assessments_topic = _topic(names.ASSESSMENTS, raw=True)
features_topic = _topic(names.FEATURES)
anomalies_topic = _topic(names.ANOMALIES)
rul_topic = _topic(names.RUL)
work_orders_topic = _topic(names.WORK_ORDERS)
dead_letters_topic = _topic(names.DEAD_LETTERS)
maintenance_topic = _topic(names.MAINTENANCE)
