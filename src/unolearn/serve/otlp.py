"""OTLP over HTTP on the proxy: ``POST /v1/traces`` and ``POST /v1/logs``, protobuf or JSON, behind the serve key.

An app that already exports OpenTelemetry points its exporter here: its GenAI (or OpenInference) LLM spans are
recorded as served answers of the key's tenant, and its ``gen_ai.evaluation.result`` events (or span events) as
feedback on them, exactly as the proxy records its own traffic (redacted before they are stored, feedback
capped per answer), so they become logs when the next ``unolearn run`` collects served answers with feedback.
Its traffic does not go through the proxy.

Feedback names its answer by ``gen_ai.response.id`` (or the span that holds it); an answer another tenant was
recorded for is unknown here. An evaluation that names a user (``user.id``) must be the answer's user, as on
``/v1/feedback``; one that names none comes from the app that holds the key. Items that cannot be taken are
counted in the answer's ``partialSuccess`` (``rejectedSpans`` / ``rejectedLogRecords``) with the first reason.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from typing import Any

from ..errors import ConfigError, RecordError, UnolearnError
from ..importers import openinference, otel
from ..importers.conversation import Turn, Verdict
from ..store import now
from .problems import HTTPProblem, error_response
from .recorder import served_row
from .wire import parse_json

PROTOBUF = "application/x-protobuf"
#: The route recorded with an answer taken from OTLP (the proxy did not route it).
OTLP_ROUTE = json.dumps({"system": "otlp", "path": "external"})


async def receive(proxy: Any, request: Any, signal: str) -> Any:
    """Handle one export request of ``signal`` (``traces`` or ``logs``)."""
    try:
        tenant = proxy.authorize(request).name
        raw = _inflate(await proxy.read_body(request), request.headers.get("content-encoding", ""),
                       proxy.cfg.max_body_bytes)
        proto = request.headers.get("content-type", "").split(";")[0].strip() == PROTOBUF
        export = decode(raw, signal, proto)
        rejected, reason = await _record(proxy, export, tenant)
    except UnolearnError as e:
        return error_response(e)
    return _answer(signal, rejected, reason, proto)


def decode(raw: bytes, signal: str, proto: bool) -> dict[str, Any]:
    """An export request as OTLP/JSON (ids in hex, as the JSON encoding has them); 400 when unreadable."""
    if not proto:  # as a chat body: 400 for a body nested too deeply, a NUL or a lone surrogate, which no store keeps
        return parse_json(raw)
    try:
        from google.protobuf.json_format import MessageToDict
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    except ImportError as e:
        raise ConfigError("OTLP protobuf needs opentelemetry-proto: pip install 'unolearn[serve]'") from e
    message = ExportTraceServiceRequest() if signal == "traces" else ExportLogsServiceRequest()
    try:
        message.ParseFromString(raw)
    except DecodeError:
        raise HTTPProblem(f"the body is not an OTLP {signal} export (protobuf)", 400, "invalid_otlp") from None
    return _hex_ids(MessageToDict(message))


def _hex_ids(value: Any) -> Any:
    """Protobuf's JSON mapping writes bytes as base64; OTLP/JSON writes trace and span ids as hex."""
    if isinstance(value, list):
        return [_hex_ids(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {k: base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
            else _hex_ids(v) for k, v in value.items()}


def _inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """The body decompressed (gzip, deflate; the exporters' ``compression`` setting), at most ``limit`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "deflate"):
        raise HTTPProblem(f"content-encoding {encoding!r} is not supported (gzip, deflate)", 415,
                          "unsupported_encoding")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, limit + 1)
    except (zlib.error, gzip.BadGzipFile):
        raise HTTPProblem(f"the body is not valid {encoding}", 400, "invalid_body") from None
    if len(out) > limit:
        raise HTTPProblem(f"request body over {limit} bytes once decompressed", 413, "request_too_large")
    return out


async def _record(proxy: Any, export: dict[str, Any], tenant: str) -> tuple[int, str]:
    """Record the turns and verdicts of ``export``; ``(items rejected, the first reason)``."""
    importer = openinference if openinference.detect(export) else otel
    try:
        pieces = list(importer.pieces(export, 0))
    except (RecordError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise HTTPProblem(f"cannot read the export: {e}", 400, "invalid_otlp") from None
    names: dict[str, str] = {}  # any id of a turn in this request → the response id it is recorded under
    for turn in (p for p in pieces if isinstance(p, Turn)):
        rid = turn.ids[0] if turn.ids else ""
        if rid and turn.output is not None:
            names.update({i: rid for i in turn.ids})
            proxy.recorder.served(served_row(rid, turn.input, turn.output or "", OTLP_ROUTE,
                                             str(turn.metadata.get("model") or "otlp"), turn.user, turn.at), tenant)
    rejected, reasons = 0, list[str]()
    for verdict in (p for p in pieces if isinstance(p, Verdict)):
        why = await _feedback(proxy, verdict, names.get(verdict.target, verdict.target), tenant)
        if why:
            rejected, reasons = rejected + 1, [*reasons, why]
    return rejected, reasons[0] if reasons else ""


async def _feedback(proxy: Any, verdict: Verdict, rid: str, tenant: str) -> str:
    """Record one verdict on answer ``rid``; the reason when it cannot be (else '')."""
    if not (verdict.comment or verdict.action):
        return f"evaluation of {rid}: neither an explanation nor a thumbs up/down"
    try:
        await proxy.admit_feedback(rid, tenant, verdict.user, app_attests=True)
    except HTTPProblem as e:
        return f"evaluation of {rid}: {e}"
    await proxy.recorder.feedback((rid, verdict.comment, verdict.action, verdict.edited, now()), tenant)
    return ""


def _answer(signal: str, rejected: int, reason: str, proto: bool) -> Any:
    """The export response: empty on full success, else ``partialSuccess``; protobuf for a protobuf request."""
    from starlette.responses import JSONResponse, Response

    field = "rejectedSpans" if signal == "traces" else "rejectedLogRecords"
    body = {"partialSuccess": {field: str(rejected), "errorMessage": reason}} if rejected else {}
    if not proto:
        return JSONResponse(body)
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    message = ExportTraceServiceResponse() if signal == "traces" else ExportLogsServiceResponse()
    return Response(ParseDict(body, message).SerializeToString(), media_type=PROTOBUF)
