"""OTLP/JSON of spans and log records made by the official OpenTelemetry SDK, as the Collector's file exporter
(and OTLP over HTTP with ``Content-Type: application/json``) writes it.

The SDK's own protobuf encoder makes the export request; protobuf's JSON mapping writes it with camelCase
names, 64-bit integers as strings and enums as integers, as OTLP/JSON does, but ``bytes`` in base64, where
OTLP/JSON writes trace and span ids in lowercase hex: those are converted.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan

#: The fields OTLP/JSON writes as hex (spans, span links, log records).
ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Finished spans (``InMemorySpanExporter.get_finished_spans()``) as an OTLP/JSON traces export."""
    return _as_json(encode_spans(spans))


def logs_json(records: Sequence[ReadableLogRecord]) -> dict[str, Any]:
    """Emitted log records (``InMemoryLogRecordExporter.get_finished_logs()``) as an OTLP/JSON logs export."""
    return _as_json(encode_logs(records))


def _as_json(message: Message) -> dict[str, Any]:
    return _hex_ids(MessageToDict(message, use_integers_for_enums=True))


def _hex_ids(value: Any) -> Any:
    """``value`` with every trace, span and parent span id turned from base64 into lowercase hex."""
    if isinstance(value, dict):
        return {k: base64.b64decode(v).hex() if k in ID_FIELDS and isinstance(v, str) else _hex_ids(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_hex_ids(v) for v in value]
    return value
