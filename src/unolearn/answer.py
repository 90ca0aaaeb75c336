"""Answering a new request through the plan: the library function behind `answer`, the proxy and bench.

A request is routed by its query to the nearest cluster; that cluster's stored plan for the chosen
system decides the path:
- ``primary``: the generator answers with the cluster's expert adapter (the validated epoch);
- ``reflective``: the base model answers, the critic adapter writes numbered revision rules for that
  answer, and the base model revises its answer under them;
- ``guide``: the base model answers with the cluster's rulebook entries of the question's nearest training logs
  before the question (``uno-guided``; :mod:`unolearn.guide`);
- ``base``: the base model answers (also for unseen queries and clusters without a plan).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .backends import ChatRequest, ChatResult, Models
from .cluster import Router
from .errors import ConfigError
from .guide import Guide
from .names import SERVED_SYSTEMS, PathName
from .plans import ensure_adapter, load_plan
from .prompts import critic_prompt, guide_messages
from .records import detect_lang
from .store import Workspace

CRITIC_MAX_TOKENS = 256

REVISE = {
    "en": ("## Request\n{query}\n\n## Draft answer\n{answer}\n\n## Suggestions\n{rules}\n\n"
           "Revise the draft so that it follows the suggestions while still answering the request "
           "correctly. Output only the complete revised answer."),
    "zh": ("## 请求\n{query}\n\n## 初稿\n{answer}\n\n## 建议\n{rules}\n\n"
           "请按照建议修改初稿，同时仍然正确地回答请求。只输出完整的修改后回答。"),
}


@dataclass
class Route:
    """The path a request takes."""

    system: str
    path: str
    cluster: int | None = None
    distance: float | None = None
    module_id: str | None = None
    epoch: int | None = None
    guide: str | None = None  # the rulebook text of the guide path
    plan_id: int | None = None  # the published plan snapshot that routed it (None: the live tables)

    def adapter(self) -> tuple[str, int]:
        """The module id and epoch of the adapter a ``primary`` or ``reflective`` route goes through."""
        assert self.module_id is not None and self.epoch is not None, f"a {self.path} route has no adapter"
        return self.module_id, self.epoch


@dataclass
class Answer:
    """The final answer, the route, and the intermediate texts of the reflective path."""

    text: str
    route: Route
    draft: str | None = None
    critique: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    latency_s: float = 0.0  # model time of the calls; an answer from the response cache counts its first call's
    finish_reason: str | None = None  # of the call that wrote the text: "length" when max_tokens cut it

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {"text": self.text, "route": asdict(self.route), "draft": self.draft,
                "critique": self.critique, "usage": self.usage, "latency_s": round(self.latency_s, 3),
                "finish_reason": self.finish_reason}


def query_of(messages: list[dict[str, str]]) -> str:
    """The text routed on: the last user message."""
    users = [m["content"] for m in messages if m.get("role") == "user"]
    if not users:
        raise ConfigError("the request has no user message")
    return users[-1]


def plan_route(ws: Workspace, router: Router | None, query: str, system: str = "uno") -> Route:
    """Where ``query`` goes under ``system`` (``uno``, ``uno-single``, ``uno-guided`` or ``base``)."""
    check_system(system)
    if system == "base" or router is None:
        return Route(system, PathName.BASE)
    cluster, distance, vec = router.locate(query)
    plan = load_plan(ws, cluster, system) if cluster is not None else None
    if plan is None:
        return Route(system, PathName.BASE, cluster, distance)
    body = ws.guide_body(plan.module_id) if plan.path == PathName.GUIDE and plan.module_id is not None else None
    guide = Guide.from_json(body).for_query(vec) if body else None
    return planned_route(system, cluster, distance, plan.path, plan.module_id, plan.epoch, guide)


def check_system(system: str) -> None:
    """A ConfigError unless ``system`` is one a request can be routed by."""
    if system not in SERVED_SYSTEMS:
        raise ConfigError(f"unknown system {system!r}; choose one of {', '.join(SERVED_SYSTEMS)}")


def planned_route(system: str, cluster: int | None, distance: float, path: str, module_id: str | None,
                  epoch: int | None, guide: str | None, plan_id: int | None = None) -> Route:
    """The route of a query that a plan sends along ``path``; a guide whose text is gone answers as base."""
    if path == PathName.GUIDE and guide is None:
        return Route(system, PathName.BASE, cluster, distance, plan_id=plan_id)
    return Route(system, path, cluster, distance, module_id, epoch, guide, plan_id)


def _usage(*results: ChatResult) -> dict[str, Any]:
    """Token counts and model time of ``results``, and the last one's finish reason (it wrote the answer):
    keyword arguments of :class:`Answer`."""
    return {"usage": {"prompt_tokens": sum(r.prompt_tokens for r in results),
                      "completion_tokens": sum(r.completion_tokens for r in results)},
            "latency_s": sum(r.latency_s for r in results), "finish_reason": results[-1].finish_reason}


async def _one(models: Models, req: ChatRequest) -> ChatResult:
    (res,) = await models.generator.generate([req], progress=False)
    if res.error:
        raise res.error
    return res


async def answer(ws: Workspace, models: Models, router: Router | None, messages: list[dict[str, str]],
                 system: str = "uno", *, max_tokens: int = 512, temperature: float = 0.0,
                 seed: int | None = 42, route: Route | None = None) -> Answer:
    """Answer one chat request through the plan of ``system`` (or along ``route`` when already planned)."""
    query = query_of(messages)
    route = route or plan_route(ws, router, query, system)
    kw = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    if route.path == PathName.PRIMARY:
        name = await ensure_adapter(models.generator, ws, *route.adapter())
        res = await _one(models, ChatRequest.of(messages, adapter=name, owners=(route.module_id,), **kw))
        return Answer(res.text, route, **_usage(res))
    if route.path == PathName.GUIDE:
        assert route.guide is not None  # planned_route sends a guide that is gone along the base path
        res = await _one(models, ChatRequest.of(guide_messages(messages, route.guide), owners=(route.module_id,),
                                                **kw))
        return Answer(res.text, route, **_usage(res))
    draft = await _one(models, ChatRequest.of(messages, **kw))
    if route.path == PathName.BASE:
        return Answer(draft.text, route, **_usage(draft))
    name = await ensure_adapter(models.generator, ws, *route.adapter())
    return await _reflect(models, messages, draft, route, name, kw)


async def self_refine(models: Models, messages: list[dict[str, str]], *, max_tokens: int = 512,
                      temperature: float = 0.0, seed: int | None = 42) -> Answer:
    """The reflective path without learning: the base model critiques its own draft, then revises it.

    The benchmark's ``self-refine`` system: what the reflective path gains over it is what the critic learned.
    """
    kw = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    draft = await _one(models, ChatRequest.of(messages, **kw))
    return await _reflect(models, messages, draft, Route("self-refine", PathName.REFLECTIVE), None, kw)


#: One model call of the reflective path: ``(messages, adapter, max_tokens)`` → ``(text, call result)``;
#: ``max_tokens`` None means the request's own settings (the revision), else the critic's.
ModelCall = Callable[[list[dict[str, str]], str | None, int | None], Awaitable[tuple[str, Any]]]


async def reflect(call: ModelCall, messages: list[dict[str, Any]], draft: str, critic: str | None,
                  query: str | None = None) -> tuple[str, str, list[Any]]:
    """The reflective path after its draft, for ``answer`` and the proxy alike: the critic's rules on
    ``draft`` (adapter ``critic``, or the base model), then the base model's revision under them.

    ``query`` defaults to the last user message. Returns the revised answer, the rules, and the
    results of the two calls.
    """
    query = query or query_of(messages)
    critique_text, critique = await call(critic_messages(query, draft), critic, CRITIC_MAX_TOKENS)
    rules = rules_of(critique_text)
    revised_text, revised = await call(revise_messages(messages, query, draft, rules), None, None)
    return strip_echo(revised_text), rules, [critique, revised]


async def _reflect(models: Models, messages: list[dict[str, str]], draft: ChatResult, route: Route,
                   critic: str | None, kw: dict[str, Any]) -> Answer:
    """:func:`reflect` on the workspace's models."""
    async def call(msgs: list[dict[str, str]], adapter: str | None, max_tokens: int | None) -> tuple[str, Any]:
        owners = (route.module_id,) if route.module_id else ()  # the critic's rules shape both calls
        req = (ChatRequest.of(msgs, owners=owners, **kw) if max_tokens is None
               else ChatRequest.of(msgs, adapter=adapter, max_tokens=max_tokens, seed=kw["seed"], owners=owners))
        res = await _one(models, req)
        return res.text, res

    text, rules, (critique, revised) = await reflect(call, messages, draft.text, critic)
    return Answer(text, route, draft.text, rules, **_usage(draft, critique, revised))


def critic_messages(query: str, draft: str) -> list[dict[str, str]]:
    """The reflective path's critic input: the query and the base model's draft answer."""
    return critic_prompt(query, draft, detect_lang(query))


def rules_of(critique: str) -> str:
    """The critic's revision rules as inserted into the revision prompt ("-" when it wrote none)."""
    return critique.strip() or "-"


def revise_messages(messages: list[dict[str, str]], query: str, draft: str, rules: str) -> list[dict[str, str]]:
    """The revision request: the conversation with its last turn replaced by the revision prompt."""
    revise = REVISE[detect_lang(query)].format(query=query, answer=draft, rules=rules)
    return [*messages[:-1], {"role": "user", "content": revise}]


def strip_echo(text: str) -> str:
    """Drop a leading markdown heading that merely labels the revision (e.g. "## Revised answer")."""
    return re.sub(r"^\s*#+\s*(revised answer|修改后的回答)\s*\n", "", text, flags=re.I).strip() or text
