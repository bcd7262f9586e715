"""Attribute names used on mantis spans, in one place.

Why this exists
===============

Span attribute keys come from ``opentelemetry-semantic-conventions`` (1.44
names) so that a renamed convention is one upgrade here, not a grep through the
agents.  The few keys that no convention defines (``asset.id``, the model's
name and version, ...) are the project's own and are declared beside them.

Notes
=====

* The messaging (Kafka) attributes are still "development" in 1.44 and live
  under ``opentelemetry.semconv._incubating``; that is the package's layout,
  not a private API of ours.
"""

from __future__ import annotations

from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_BATCH_MESSAGE_COUNT,
    MESSAGING_CONSUMER_GROUP_NAME,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_DESTINATION_PARTITION_ID,
    MESSAGING_KAFKA_MESSAGE_KEY,
    MESSAGING_KAFKA_OFFSET,
    MESSAGING_MESSAGE_BODY_SIZE,
    MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_SYSTEM,
    MessagingOperationTypeValues,
    MessagingSystemValues,
)
from opentelemetry.semconv._incubating.attributes.service_attributes import SERVICE_NAMESPACE
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME, SERVICE_VERSION
from opentelemetry.semconv.attributes.url_attributes import URL_PATH

KAFKA = MessagingSystemValues.KAFKA.value
OP_TYPE_PROCESS = MessagingOperationTypeValues.PROCESS.value
OP_TYPE_SEND = MessagingOperationTypeValues.SEND.value

# The project's own keys (no convention covers them).
ASSET_ID = "asset.id"
SENSOR_ID = "sensor.id"
MODEL_NAME = "model.name"
MODEL_VERSION = "model.version"
PREDICTION_RESULT = "prediction.result"
PREDICTION_SCORE = "prediction.score"
#: A RUL estimate's number and unit (``prediction.result`` stays a string in every stage: "degrading"/"healthy").
RUL_VALUE = "rul.value"
RUL_UNIT = "rul.unit"
BATCH_SIZE = "batch.size"
#: Why a span was recorded although its trace was not sampled / why a link exists.
SAMPLING_REASON = "mantis.sampling.reason"
LINK_REASON = "mantis.link.reason"
#: The sampler's decision on root spans, like Jaeger clients' ``sampler.type`` tags.
SAMPLER_TYPE = "sampler.type"
SAMPLER_PARAM = "sampler.param"

__all__ = [
    "ASSET_ID", "BATCH_SIZE", "ERROR_TYPE", "HTTP_REQUEST_METHOD", "HTTP_RESPONSE_STATUS_CODE", "HTTP_ROUTE",
    "KAFKA", "LINK_REASON", "MESSAGING_BATCH_MESSAGE_COUNT", "MESSAGING_CONSUMER_GROUP_NAME",
    "MESSAGING_DESTINATION_NAME", "MESSAGING_DESTINATION_PARTITION_ID", "MESSAGING_KAFKA_MESSAGE_KEY",
    "MESSAGING_KAFKA_OFFSET", "MESSAGING_MESSAGE_BODY_SIZE", "MESSAGING_OPERATION_NAME",
    "MESSAGING_OPERATION_TYPE", "MESSAGING_SYSTEM", "MODEL_NAME", "MODEL_VERSION", "OP_TYPE_PROCESS",
    "OP_TYPE_SEND", "PREDICTION_RESULT", "PREDICTION_SCORE", "RUL_UNIT", "RUL_VALUE", "SAMPLER_PARAM", "SAMPLER_TYPE",
    "SAMPLING_REASON", "SENSOR_ID", "SERVICE_NAME", "SERVICE_NAMESPACE", "SERVICE_VERSION", "URL_PATH",
]
