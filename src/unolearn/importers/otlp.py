"""OTLP/JSON as the OpenTelemetry Collector's file exporter writes it (and as OTLP over HTTP sends it with
``Content-Type: application/json``): ``resourceSpans`` and ``resourceLogs``, their ``attributes`` as lists of
``{"key", "value": {"stringValue" | "intValue" | …}}``. Decoded here into plain dicts for the importers of
OpenTelemetry GenAI and OpenInference spans.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import RecordError


@dataclass
class Event:
    """A span event or a log record: its name, time, attributes and body, with the span it belongs to."""

    name: str
    at: str
    attributes: dict[str, Any]
    body: Any = None
    trace_id: str = ""
    span_id: str = ""


@dataclass
class Span:
    """One span: ids, name, start time (ISO 8601), attributes (the resource's under the span's own) and events."""

    trace_id: str
    span_id: str
    name: str
    at: str
    attributes: dict[str, Any]
    events: list[Event]


def is_otlp(obj: Any) -> bool:
    """Whether ``obj`` is an OTLP/JSON export (traces or logs)."""
    return isinstance(obj, dict) and bool({"resourceSpans", "resourceLogs"} & obj.keys())


def value(v: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python value (kvlists as dicts, arrays as lists)."""
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [value(x) for x in (v["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in v:
        return attributes((v["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def attributes(items: Any, field: str = "attributes") -> dict[str, Any]:
    """OTLP ``attributes`` (a list of key/value pairs) as a dict."""
    if items is None:
        return {}
    if not isinstance(items, list):
        raise RecordError(f"{field}: expected a list of key/value pairs")
    return {str(kv.get("key")): value(kv.get("value")) for kv in items if isinstance(kv, dict)}


def iso(nanos: Any) -> str:
    """Unix nanoseconds (a string or a number, as OTLP/JSON writes them) as ISO 8601 UTC; '' when absent."""
    try:
        n = int(nanos)
    except (TypeError, ValueError):
        return ""
    try:
        return datetime.fromtimestamp(n / 1e9, UTC).isoformat() if n > 0 else ""
    except (OverflowError, ValueError, OSError):  # past the year 9999: no time at all
        return ""


def spans(obj: dict[str, Any]) -> Iterator[Span]:
    """Every span of an OTLP/JSON traces export."""
    for i, rs in enumerate(obj.get("resourceSpans") or []):
        resource = attributes((rs.get("resource") or {}).get("attributes"), f"resourceSpans[{i}].resource")
        for ss in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
            for sp in ss.get("spans") or []:
                trace_id, span_id = str(sp.get("traceId") or ""), str(sp.get("spanId") or "")
                events = [Event(str(e.get("name") or ""), iso(e.get("timeUnixNano")),
                                attributes(e.get("attributes")), None, trace_id, span_id)
                          for e in sp.get("events") or []]
                yield Span(trace_id, span_id, str(sp.get("name") or ""), iso(sp.get("startTimeUnixNano")),
                           {**resource, **attributes(sp.get("attributes"))}, events)


def log_records(obj: dict[str, Any]) -> Iterator[Event]:
    """Every log record of an OTLP/JSON logs export (its event name from ``eventName`` or ``event.name``)."""
    for i, rl in enumerate(obj.get("resourceLogs") or []):
        resource = attributes((rl.get("resource") or {}).get("attributes"), f"resourceLogs[{i}].resource")
        for sl in rl.get("scopeLogs") or []:
            for rec in sl.get("logRecords") or []:
                attrs = {**resource, **attributes(rec.get("attributes"))}
                name = rec.get("eventName") or attrs.get("event.name") or ""
                yield Event(str(name), iso(rec.get("timeUnixNano") or rec.get("observedTimeUnixNano")), attrs,
                            value(rec.get("body")), str(rec.get("traceId") or ""), str(rec.get("spanId") or ""))
