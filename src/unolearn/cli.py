"""The ``unolearn`` command line: thin commands that parse, call the library and print."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import CONFIG_FILE, BackendsConfig, load_backends, stage_config
from .errors import InputError, UnolearnError
from .store import Workspace


def echo_json(obj: Any) -> None:
    """Print ``obj`` as one JSON document on stdout."""
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def open_workspace(ctx: click.Context) -> Workspace:
    """Open the workspace named by the group's ``--workspace`` option (once per invocation)."""
    obj = ctx.find_root().ensure_object(dict)
    if "ws" not in obj:
        obj["ws"] = ctx.with_resource(Workspace.open(obj.get("workspace")))
    return obj["ws"]


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="unolearn")
@click.option("-d", "--workspace", type=click.Path(file_okay=False), envvar="UNOLEARN_HOME",
              help="Workspace directory (SQLite database + artifacts). "
                   "Default: $UNOLEARN_HOME, else ./unolearn-workspace.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Configuration file (YAML). Default: config.yaml in the workspace.")
@click.option("--backend", type=click.Choice(["embedded", "openai"]),
              help="Generator backend [env UNOLEARN_BACKEND]. Default: embedded.")
@click.option("--base-url", help="OpenAI-compatible server of the generator, e.g. "
                                 "http://localhost:8000/v1 [env UNOLEARN_BASE_URL].")
@click.option("--model", help="Generator model: the served name (openai) or a GGUF path (embedded) "
                              "[env UNOLEARN_MODEL].")
@click.option("--no-cache", is_flag=True, help="Bypass the workspace's response and embedding cache.")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None, config_file: Path | None, backend: str | None,
        base_url: str | None, model: str | None, no_cache: bool) -> None:
    """unolearn: make a deployed LLM system better from its own user logs.

    Logs of users reacting to answers are distilled into rules and preference pairs,
    clustered by topic and feedback, and turned into per-cluster LoRA experts or critics
    (the UNO method). Start with `unolearn ingest LOGS.jsonl`, then `unolearn logs stats`.
    """
    obj = ctx.ensure_object(dict)
    obj["workspace"] = workspace
    obj["config_file"] = config_file
    if backend is None and base_url:
        backend = "openai"
    obj["overrides"] = {"generator": {"backend": backend, "base_url": base_url, "model": model},
                        "cache": {"enabled": False if no_cache else None}}


def load_config(ctx: click.Context) -> BackendsConfig:
    """The effective backend configuration: defaults → config file → environment → flags."""
    obj = ctx.find_root().obj
    file = obj["config_file"] or open_workspace(ctx).root / CONFIG_FILE
    if obj["config_file"] and not file.exists():
        raise InputError("no such file", file=str(file))
    return load_backends(file, obj["overrides"])


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["auto", "openai", "memorybench", "sharegpt"]),
              default="auto", show_default=True,
              help="Input format; 'auto' detects it per record from its keys.")
@json_option
@click.pass_context
def ingest(ctx: click.Context, paths: tuple[Path, ...], fmt: str, as_json: bool) -> None:
    """Store the logs of PATHS (JSONL or JSON-array files) in the workspace.

    Records already stored are counted as duplicates and not added again. Invalid records are
    reported as FILE:LINE: REASON on stderr and kept in the workspace's `rejected` table.
    Exits 0 when at least one valid record was read, 2 when none was.
    """
    from .ingest import ingest as run_ingest

    ws = open_workspace(ctx)

    def report(rej: Any) -> None:
        click.echo(f"{rej.file}:{rej.line}: {rej.reason}", err=True)

    result = run_ingest(ws, list(paths), fmt, on_reject=report, progress=False if as_json else None)
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(f"ingested {result.ingested}, duplicates {result.duplicates}, "
                   f"rejected {result.rejected}")
    if result.ingested + result.duplicates == 0:
        raise InputError("no valid record found in the input")


@cli.group()
def logs() -> None:
    """Inspect the stored logs."""


@logs.command("stats")
@json_option
@click.pass_context
def logs_stats(ctx: click.Context, as_json: bool) -> None:
    """Counts of logs by source, language, feedback and implicit action."""
    stats = open_workspace(ctx).log_stats()
    if as_json:
        echo_json(stats)
        return
    click.echo(f"logs: {stats['logs']} ({stats['with_feedback']} with feedback, "
               f"{stats['without_feedback']} without); rejected records: {stats['rejected']}")
    d = stats["distilled"]
    if d["prior_rules"] or d["feedback_rules"]:
        click.echo(f"distilled: {d['prior_rules']} prior rule sets; {d['feedback_rules']} logs with "
                   f"feedback text: {d['usable_feedback']} usable, {d['filtered_as_noise']} filtered as noise; "
                   f"pairs: {sum(d['pairs'].values())} {d['pairs'] or ''}")
    for title, key in (("source", "by_source"), ("language", "by_lang"), ("action", "actions")):
        if stats[key]:
            click.echo(f"by {title}:")
            for name, n in stats[key].items():
                click.echo(f"  {name:<40} {n:>8}")


@logs.command("show")
@click.argument("log_id")
@json_option
@click.pass_context
def logs_show(ctx: click.Context, log_id: str, as_json: bool) -> None:
    """Show one log by its id (a unique prefix is enough)."""
    log = open_workspace(ctx).get_log(log_id)
    if as_json:
        echo_json({"id": log.id, **log.model_dump(mode="json")})
        return
    click.echo(f"id: {log.id}\nsource: {log.source}  lang: {log.lang}  rating: {log.rating}")
    for m in log.messages:
        click.echo(f"[{m.role}] {m.content}")
    for a in log.actions:
        click.echo(f"(action) {a.kind}" + (f": {a.edited}" if a.edited else ""))


def models_for(ctx: click.Context):
    """The configured models of this invocation (built lazily)."""
    from .backends import Models

    return Models(open_workspace(ctx), load_config(ctx))


def stage_config_for(ctx: click.Context, cls: type, section: str, **flags: Any) -> Any:
    """A stage's config: defaults → the config file's ``section`` → the flags that were set."""
    obj = ctx.find_root().obj
    return stage_config(cls, obj["config_file"] or open_workspace(ctx).root / CONFIG_FILE, section, flags)


@cli.command()
@click.option("--revisions", "n_revisions", type=click.IntRange(min=1),
              help="Revised answers per log (default 3); the judge's best becomes `chosen`.")
@click.option("--seed", type=int, help="Seed of the first revision (default 42).")
@click.option("--chunk-size", type=click.IntRange(min=1), help="Logs committed together (default 64).")
@json_option
@click.pass_context
def distill(ctx: click.Context, n_revisions: int | None, seed: int | None, chunk_size: int | None,
            as_json: bool) -> None:
    """Distil logs into rules (with and without feedback) and preference pairs.

    Only the work still missing is done, and every model call is cached in the workspace, so an
    interrupted run resumes where it stopped. `unolearn logs stats` then shows how many logs carried
    usable feedback (the first noise filter).
    """
    from .distill import DistillConfig, run

    cfg = stage_config_for(ctx, DistillConfig, "distill", n_revisions=n_revisions, seed=seed,
                           chunk_size=chunk_size)
    result = run(open_workspace(ctx), models_for(ctx), cfg, progress=False if as_json else None)
    out = result.as_dict()
    if as_json:
        echo_json(out)
        return
    click.echo(f"distilled {out['logs']} logs: {out['prior_rules']} prior rule sets, {out['feedback_rules']} "
               f"feedback rule sets ({out['usable_feedback']} usable, {out['filtered_as_noise']} noise), "
               f"pairs {out['pairs']}, failed requests {out['failed']}")


@cli.group()
def pairs() -> None:
    """Preference pairs made by `unolearn distill`."""


@pairs.command("export")
@click.option("--format", "fmt", type=click.Choice(["trl", "openai-dpo"]), default="trl", show_default=True,
              help="trl: prompt/chosen/rejected (conversational); openai-dpo: "
                   "input/preferred_output/non_preferred_output.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write JSONL here (atomically) instead of stdout.")
@click.pass_context
def pairs_export(ctx: click.Context, fmt: str, output: Path | None) -> None:
    """Export the preference pairs as JSONL for DPO training elsewhere."""
    from .distill import export_pairs

    lines = (json.dumps(r, ensure_ascii=False) for r in export_pairs(open_workspace(ctx), fmt))
    if output is None:
        for line in lines:
            click.echo(line)
        return
    tmp = output.with_name(output.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        n = sum(fh.write(line + "\n") > 0 for line in lines)
    tmp.replace(output)
    click.echo(f"wrote {n} pairs to {output}", err=True)


@cli.command()
@click.option("--scorer", type=click.Choice(["embedding", "logprob"]),
              help="embedding: 1 − max cosine to the prior rules (default); logprob: yes/no probability "
                   "from the judge's logprobs (needs a server that returns logprobs).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0),
              help="Gap at or above which a cluster is planned 'reflective' (default 0.45).")
@json_option
@click.pass_context
def assess(ctx: click.Context, scorer: str | None, threshold: float | None, as_json: bool) -> None:
    """Measure each cluster's cognitive gap and plan its path (primary or reflective)."""
    from .assess import AssessConfig, run

    cfg = stage_config_for(ctx, AssessConfig, "assess", scorer=scorer, threshold=threshold)
    gaps = run(open_workspace(ctx), models_for(ctx), cfg)
    if as_json:
        echo_json([vars(g) for g in gaps])
        return
    for g in gaps:
        click.echo(f"cluster {g.cluster:>4}: {g.n_logs:>5} logs, gap {g.gap:.2f} "
                   f"(mean {g.gap_mean:.2f}, max {g.gap_max:.2f}) → {g.plan}")


@cli.group()
def clusters() -> None:
    """Inspect the clusters."""


@clusters.command("list")
@json_option
@click.pass_context
def clusters_list(ctx: click.Context, as_json: bool) -> None:
    """Each cluster's size, example queries, top rules, gap and plan."""
    from .report import cluster_summaries

    rows = cluster_summaries(open_workspace(ctx))
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no clusters yet: run `unolearn cluster`")
    for r in rows:
        gap = "not assessed" if r["gap"] is None else f"gap {r['gap']:.2f} → {r['plan']}"
        click.echo(f"cluster {r['cluster']} ({r['size']} logs, {gap})")
        for q in r["top_queries"]:
            click.echo(f"    query: {' '.join(q.split())[:100]}")
        for rule in r["top_rules"]:
            click.echo(f"    rule:  {rule[:100]}")


@cli.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the HTML (default: artifacts/report.html in the workspace).")
@click.pass_context
def report(ctx: click.Context, output: Path | None) -> None:
    """Write a static HTML report: cluster map, clusters with gap and plan, noise-filter counts."""
    from .report import write_report

    models = models_for(ctx)
    click.echo(str(write_report(open_workspace(ctx), models.embedder, output)))


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective backend configuration (API keys masked) as JSON."""
    echo_json(load_config(ctx).as_dict())


@cli.command()
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

    from .backends import ChatRequest, Models

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


@cli.group()
def bench() -> None:
    """Benchmarks that print JSON figures measured on this machine."""


@bench.command("ingest")
@click.option("--n", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Number of synthetic log records to ingest.")
@json_option
def bench_ingest(n: int, as_json: bool) -> None:
    """Ingest N synthetic records in a child process; report records/s and peak resident memory."""
    from .bench import bench_ingest as run

    out = run(n)
    echo_json(out) if as_json else click.echo(
        f"{out['n']} records: {out['records_per_s']:.0f} records/s, peak {out['peak_mb']:.0f} MB")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning unolearn errors into one line and an exit code."""
    try:
        rc = cli.main(args=argv, prog_name="unolearn", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except UnolearnError as e:
        click.echo(f"error: {_one_line(e)}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    if isinstance(rc, int) and rc:
        sys.exit(rc)
