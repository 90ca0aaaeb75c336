"""Serving and checking: answer, serve, chat, config, doctor."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..config import stage_config
from ..errors import InputError
from ..names import SERVED_SYSTEMS
from ..store import resolve_dir
from .common import (
    config_path,
    echo_json,
    invocation,
    json_option,
    load_config,
    models_for,
    open_root,
    open_workspace,
    stage_config_for,
    tenant_of,
)


@click.command("answer")
@click.argument("query")
@click.option("--system", type=click.Choice(SERVED_SYSTEMS), default="uno",
              show_default=True, help="uno: expert, critic or base per the plan; uno-single: expert or base; "
                                      "uno-guided: the rulebook guide unless validation found it worse than "
                                      "base, else the best validated expert or critic; "
                                      "base: no memory.")
@click.option("--max-tokens", type=click.IntRange(min=1),
              help="Token budget of the answer (default: the profile's, as in `bench quality`: 1024; cpu 256).")
@json_option
@click.pass_context
def answer_cmd(ctx: click.Context, query: str, system: str, max_tokens: int | None, as_json: bool) -> None:
    """Answer QUERY through the published plan, as the proxy would, and show the path taken (cluster,
    module, epoch, plan id), and whether the token budget cut the answer."""
    import asyncio

    from ..answer import Route, answer
    from ..bench.quality import QualityConfig
    from ..snapshot import PlanSnapshot

    max_tokens = max_tokens or stage_config_for(ctx, QualityConfig, "bench_quality").max_tokens

    ws, models = open_workspace(ctx), models_for(ctx)
    snapshot = PlanSnapshot.load(ws, models.embedder) if system != "base" else None
    route = snapshot.route(query, system) if snapshot else Route(system, "base")

    async def go():
        try:
            return await answer(ws, models, snapshot.router if snapshot else None,
                                [{"role": "user", "content": query}], system, max_tokens=max_tokens, route=route)
        finally:
            await models.aclose()

    out = asyncio.run(go())
    if as_json:
        echo_json(out.as_dict())
        return
    r = out.route
    where = f"cluster {r.cluster}" if r.cluster is not None else "no cluster"
    module = f", {r.module_id}" + (f" epoch {r.epoch}" if r.epoch is not None else "") if r.module_id else ""
    plan = f", plan {r.plan_id}" if r.plan_id is not None else ""
    click.echo(f"[{r.system}: {r.path}, {where}{module}{plan}]", err=True)
    if r.guide:
        click.echo("[guide]\n" + r.guide, err=True)
    click.echo(out.text)
    if out.finish_reason == "length":
        click.echo(f"[cut: the answer reached the token budget ({max_tokens}); --max-tokens raises it]", err=True)


@click.command()
@click.option("--upstream", help="Base URL of the model server to route to (vLLM, SGLang, any "
                                 "OpenAI-compatible), e.g. http://localhost:8000/v1.")
@click.option("--embedded", is_flag=True, help="No upstream: answer with the workspace's configured chat "
                                               "backend (the embedded model by default).")
@click.option("--host", help="Interface to listen on (default 127.0.0.1; config `serve: {host}`).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default 8400).")
@click.option("--system", type=click.Choice(SERVED_SYSTEMS),
              help="Default routing (default uno); a request may override it with the header X-Unolearn-System.")
@click.option("--load-adapters", is_flag=True, default=None,
              help="Load the planned adapters into the upstream, at start and on each reload (vLLM --enable-lora "
                   "with runtime LoRA updating).")
@click.option("--reload-interval", type=click.FloatRange(min=0),
              help="Seconds between looks for a newly published plan (default 10; 0: only POST /v1/admin/reload).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Proxy processes sharing the port (default 1; upstream mode; e.g. one per core).")
@click.option("--insecure", is_flag=True, default=None,
              help="Serve on an interface other than loopback without an API key (refused otherwise).")
@click.pass_context
def serve(ctx: click.Context, upstream: str | None, embedded: bool, host: str | None, port: int | None,
          system: str | None, load_adapters: bool | None, reload_interval: float | None, workers: int | None,
          insecure: bool | None) -> None:
    """Run an OpenAI-compatible proxy that routes each request by the workspace's published plan.

    Endpoints: POST /v1/chat/completions (streaming too), GET /v1/models, GET /healthz, GET /metrics,
    POST /v1/feedback, POST /v1/admin/reload. Every answer is recorded; feedback posted for its response
    id feeds the next `unolearn run`, whose `select` publishes a new plan: each worker picks it up
    without a restart (requests in flight finish on the old one). Set UNOLEARN_SERVE_KEY (or `serve:
    {api_key}` in config.yaml) to require `Authorization: Bearer <key>` (the reload endpoint too). Every
    setting of the config's `serve:` section applies; a flag given here wins. With `serve: {keys: {KEY:
    TENANT}}` each key's requests are routed, recorded and given feedback in its tenant only.
    """
    from ..redact import RedactConfig, warn_if_disabled
    from ..serve import ServeConfig
    from ..serve import serve as run_server

    if tenant_of(ctx) is not None:
        raise InputError("serve routes each request by the tenant of its key (config.yaml `serve: {keys}`); "
                         "--tenant does not apply")
    ws = open_root(ctx)
    flags = {"upstream": upstream, "host": host, "port": port, "system": system, "load_adapters": load_adapters,
             "reload_interval_s": reload_interval, "workers": workers, "insecure": insecure}
    cfg = stage_config(ServeConfig, config_path(ctx), "serve", flags)
    if bool(cfg.upstream) == embedded:
        raise InputError("give exactly one of --upstream URL (or `serve: {upstream}` in config.yaml) or --embedded")
    redact = stage_config_for(ctx, RedactConfig, "redact")
    warn_if_disabled(redact, "serve")
    run_server(ws.root, cfg, store=ws.store, backends=load_config(ctx), redact=redact)


@click.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective backend configuration (API keys masked) as JSON."""
    echo_json(load_config(ctx).as_dict())


@click.command()
@click.argument("prompt")
@click.option("--role", type=click.Choice(["generator", "judge"]), default="generator", show_default=True,
              help="Which configured model answers.")
@click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSON schema file: the answer must be a JSON object valid under it.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0, show_default=True)
@click.option("--adapter", help="A LoRA adapter name known to the backend.")
@json_option
@click.pass_context
def chat(ctx: click.Context, prompt: str, role: str, schema_file: Path | None, max_tokens: int,
         temperature: float, adapter: str | None, as_json: bool) -> None:
    """Send one PROMPT to the configured model and print its answer (a backend smoke test)."""
    import asyncio

    from ..backends import ChatRequest, Models

    schema = None
    if schema_file:
        try:
            schema = json.loads(schema_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"not a JSON schema: {e}", file=str(schema_file)) from e
    models = Models(open_workspace(ctx), load_config(ctx))
    model = models.generator if role == "generator" else models.judge
    req = ChatRequest.of(prompt, schema=schema, max_tokens=max_tokens, temperature=temperature,
                         adapter=adapter, seed=42)

    async def go():
        try:
            return (await model.generate([req]))[0]
        finally:
            await models.aclose()

    res = asyncio.run(go())
    if res.error:
        raise res.error
    if as_json:
        echo_json({"model": model.model_id, "text": res.text, "parsed": res.parsed, "cached": res.cached,
                   "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                   "latency_s": round(res.latency_s, 3)})
    else:
        click.echo(res.text)


@click.command()
@click.option("--no-generate", is_flag=True, help="Skip the test generation and embedding (seconds instead of ~20 s).")
@json_option
@click.pass_context
def doctor(ctx: click.Context, no_generate: bool, as_json: bool) -> None:
    """Check that this machine can run the embedded default, and what it will cost.

    Reports Python and package versions, CPU features (AVX2, AVX-512, AMX), the model file and its
    sha256, one short generation with tokens/s and one embedding (each in a child process, so a native
    crash is reported, not fatal), the workspace and the effective configuration with the reachability
    of each configured server. Exit code 1 when a check fails; the JSON keys are listed in docs/guide/models.md.
    """
    from ..doctor import run

    inv = invocation(ctx)
    report = run(load_config(ctx), resolve_dir(inv.workspace), generate=not no_generate, store=inv.store)
    if as_json:
        echo_json(report)
    else:
        for c in report["checks"]:
            mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[c["status"]]
            click.echo(f"{mark} {c['name']:<10} {c['detail']}" + (f"  → {c['fix']}" if c["fix"] else ""))
    if not report["ok"]:
        sys.exit(1)
