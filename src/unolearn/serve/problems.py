"""HTTP errors of the proxy: OpenAI-shaped error bodies, never a traceback."""

from __future__ import annotations

import json
from typing import Any

from ..errors import UnolearnError


class HTTPProblem(UnolearnError):
    """An error answered with a chosen HTTP status and OpenAI error ``type``, ``code`` and ``param`` (the request
    field at fault, when there is one)."""

    def __init__(self, message: str, status: int, code: str, type_: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.http_status, self.code, self.param = status, code, param
        self.type = type_ or ("invalid_request_error" if status < 500 else "upstream_error")


class UpstreamError(HTTPProblem):
    """The upstream failed: timeout, connection error or 5xx (502), or refused the request (its 4xx)."""

    def __init__(self, message: str, kind: str, status: int = 502, param: str | None = None) -> None:
        super().__init__(message, status, f"upstream_{kind}", param=param)
        self.kind = kind


def error_body(e: UnolearnError) -> dict[str, Any]:
    """The OpenAI-style error body of ``e``."""
    status = e.http_status
    kind = getattr(e, "type", None) or ("invalid_request_error" if status < 500 else "server_error")
    code = getattr(e, "code", None) or type(e).__name__
    param = getattr(e, "param", None) or getattr(e, "field", None)
    return {"error": {"message": str(e), "type": kind, "param": param, "code": code}}


def error_response(e: UnolearnError, headers: dict[str, str] | None = None) -> Any:
    """A JSON error response for ``e`` (status ``e.http_status``)."""
    from starlette.responses import Response

    return Response(json.dumps(error_body(e)), status_code=e.http_status, media_type="application/json",
                    headers=headers)
