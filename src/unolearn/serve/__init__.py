"""An OpenAI-compatible proxy that routes each request through the workspace's plan and records it.

Why: the deployed app talks to this proxy instead of its model server. Each request goes to the
cluster's expert, critic-then-revise or the base model (the UNO plan), and every served answer is kept
with the feedback users later give on it, so the next ``unolearn run`` learns from served traffic
(:func:`collect_served` turns them into logs): the loop closes.

HTTP contract (JSON bodies; errors are ``{"error": {"message", "type", "param", "code"}}``, never a traceback):

- ``POST /v1/chat/completions`` — an OpenAI chat completion request (``stream`` true or false).
  Routed on the last user message. The header ``X-Unolearn-System: uno|uno-single|uno-guided|base``
  overrides the configured system for one request. The answer is OpenAI-shaped (``chat.completion``, or
  ``chat.completion.chunk`` SSE events ending with ``data: [DONE]``); its ``id`` is the proxy's
  *response id* (also in ``X-Unolearn-Response-Id``), the one ``/v1/feedback`` takes. The header
  ``X-Unolearn-Route`` says ``path=…; cluster=…; system=…[; adapter=module@epoch | guide=module]``.
  Upstream mode: *base* forwards the client's body unchanged; *primary* forwards it with ``model`` set
  to the expert adapter (vLLM ``--enable-lora`` naming: ``module@epoch``); streamed events are
  relayed one by one as they arrive, only their ``id`` replaced. *reflective* makes three upstream
  calls (draft, critic adapter, revision) and returns only the revised answer (as SSE events when
  streaming). *guide* forwards the body with the cluster's rulebook before the question (any upstream:
  no adapter). Embedded mode (no upstream): :func:`unolearn.answer.answer` on the workspace's models.
- ``GET /v1/models`` — the upstream's model list (embedded mode: the one model ``unolearn``).
- ``POST /v1/feedback`` — ``{"response_id", "text"?, "action"?: like|dislike|copy|regenerate|edit,
  "edited"?}`` (text or action required; ``edited`` exactly with ``edit``). 200 once stored, 404 for an
  unknown response id, 400 for a bad body.
- ``GET /healthz`` — liveness, no auth. ``GET /metrics`` — Prometheus text format.

Statuses: 401 without ``Authorization: Bearer <key>`` when a key is set; 400 invalid JSON or body;
413 body over ``max_body_bytes`` or more than ``max_messages`` messages; 4xx from the upstream is
relayed with its message; upstream timeout, connection error or 5xx → 502; other unolearn errors by
their ``http_status``.

Storage contract (tables ``served`` and ``feedback``, migration m005): a served row is queued and
written off the request path by one writer (batches, in a thread, flushed on shutdown); a feedback
is answered only after its row is committed, after the row of its response (one queue, in order).
Logs and feedback never leave through the API. Several processes (``--workers``) or replicas on other
machines (one PostgreSQL store, ``--store``) each have their own writer: a feedback that reaches
another process than its answer did is looked up in the store for a moment (the other writer may
still hold the row in its queue), then stored against it.


The package: ``config`` (settings), ``wire`` (OpenAI shapes and request parsing), ``upstream`` (the
upstream client), ``recorder``, ``metrics``, ``problems`` (HTTP errors), ``proxy``, ``app`` (the ASGI
app and the server processes) and ``collect`` (served answers → logs).
"""

from .app import create_app, serve, worker_app
from .collect import collect_served, served_log
from .config import ServeConfig
from .recorder import Recorder

__all__ = ["Recorder", "ServeConfig", "collect_served", "create_app", "serve", "served_log", "worker_app"]
