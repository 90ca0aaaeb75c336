"""The stages of the main job, one command each, and `run` for all of them."""

from __future__ import annotations

from typing import Any

import click

from ..distill import DistillConfig
from ..errors import InputError
from ..funnel import funnel_lines
from ..names import STAGES
from ..train import TrainConfig
from .common import (
    echo_json,
    executor_config,
    executor_option,
    field_help,
    json_option,
    load_config,
    models_for,
    open_root,
    open_workspace,
    stage_config_for,
    tenant_of,
)


@click.command()
@click.option("--revisions", "n_revisions", type=click.IntRange(min=1), help=field_help(DistillConfig, "n_revisions"))
@click.option("--seed", type=int, help=field_help(DistillConfig, "seed"))
@click.option("--chunk-size", type=click.IntRange(min=1), help=field_help(DistillConfig, "chunk_size"))
@executor_option
@json_option
@click.pass_context
def distill(ctx: click.Context, n_revisions: int | None, seed: int | None, chunk_size: int | None,
            executor: str | None, as_json: bool) -> None:
    """Distil logs into rules (with and without feedback) and preference pairs.

    Only the work still missing is done, and every model call is cached in the workspace, so an
    interrupted run resumes where it stopped. `unolearn logs stats` then shows how many logs carried
    usable feedback (the first noise filter).
    """
    from ..distill import DistillConfig, run

    cfg = stage_config_for(ctx, DistillConfig, "distill", n_revisions=n_revisions, seed=seed,
                           chunk_size=chunk_size)
    result = run(open_workspace(ctx), models_for(ctx), cfg, progress=False if as_json else None,
                 executor=executor_config(ctx, executor))
    out = result.as_dict()
    if as_json:
        echo_json(out)
        return
    click.echo(f"distilled {out['logs']} logs: {out['prior_rules']} prior rule sets, {out['feedback_rules']} "
               f"feedback rule sets ({out['usable_feedback']} usable, {out['filtered_as_noise']} noise, of which "
               f"{out['gated_as_noise']} by the gate), rules dropped {out['rules_rejected'] or 0}, "
               f"pairs {out['pairs']} ({out['unpaired']} logs without a candidate that passed the guards; "
               f"candidates set aside {out['guarded'] or 0}), failed requests {out['failed']}")


@click.command("cluster")
@click.option("--threshold", type=click.FloatRange(min=0.0, min_open=True),
              help="Ward distance at which the hierarchy is cut (default: chosen from the data by the best "
                   "silhouette; the paper's 4.0 fits Qwen3-Embedding-0.6B). Use --sweep to compare values.")
@click.option("--sweep", "sweep_values", help="Comma-separated thresholds: print the cluster count and "
                                               "sizes at each, store nothing.")
@click.option("--recluster", is_flag=True, default=None,
              help="Rebuild from all logs (new cluster ids) instead of adding the new logs to the clusters.")
@json_option
@click.pass_context
def cluster_cmd(ctx: click.Context, threshold: float | None, sweep_values: str | None, recluster: bool | None,
                as_json: bool) -> None:
    """Cluster the logs with usable feedback by query and feedback (dual embedding, Ward).

    Each cluster keeps the centroid of its members' query embeddings; new queries are routed to the
    nearest one. Incremental by default: new logs join the cluster whose spread they fall within, the
    others form new clusters, and existing cluster ids stay (their unchanged modules are reused).
    `drift` is the share of logs added since the last rebuild that fitted no cluster: rebuild with
    --recluster when it grows (say past 0.3). A new clustering version replaces the clusters' gaps
    and plans; the proxy keeps serving the published plan until `select` publishes the next one.
    """
    from ..cluster import ClusterConfig, run, sweep

    cfg = stage_config_for(ctx, ClusterConfig, "cluster", threshold=threshold, recluster=recluster)
    embedder = models_for(ctx).embedder
    if sweep_values:
        try:
            values = [float(v) for v in sweep_values.split(",") if v.strip()]
        except ValueError as e:
            raise InputError(f"--sweep: not a list of numbers: {sweep_values!r}") from e
        rows = sweep(open_workspace(ctx), embedder, values, cfg)
        if as_json:
            echo_json(rows)
            return
        for r in rows:
            sil = f", silhouette {r['silhouette']:.3f}" if r.get("silhouette") is not None else ""
            click.echo(f"threshold {r['threshold']:>6}: {r['n_clusters']:>5} clusters, largest "
                       f"{sorted(r['sizes'], reverse=True)[:8]}{sil}" + (f" ({r['auto']})" if r.get("auto") else ""))
        return
    result = run(open_workspace(ctx), embedder, cfg)
    if as_json:
        echo_json(vars(result))
    else:
        click.echo(f"{result.n_logs} logs → {result.n_clusters} clusters ({result.method}, threshold "
                   f"{result.threshold:g}: {result.threshold_from}; {result.seconds:.1f} s); sizes {result.sizes[:12]}")
        if result.mode != "full":
            click.echo(f"{result.mode}: {result.added} new logs, {result.unfit} fitted no cluster; clusters changed "
                       f"{result.changed[:20]}; drift {result.drift:.2f} (rebuild with --recluster when it grows)")


@click.command("run")
@click.argument("paths", nargs=-1, metavar="[PATHS|langfuse+https://HOST]...")
@click.option("--stop-after", type=click.Choice(STAGES), help="End after this stage.")
@executor_option
@json_option
@click.pass_context
def run_cmd(ctx: click.Context, paths: tuple[str, ...], stop_after: str | None, executor: str | None,
            as_json: bool) -> None:
    """The main job: ingest PATHS (if given) → distill → cluster → assess → rulebook → train → select.

    Each log goes to its tenant's store; then every tenant learns in turn from its own logs (only --tenant's
    when given; a tenant without logs is skipped).

    Resumable: re-running continues where an interrupted run stopped, and repeats no finished model
    call or training. Each stage reads its section of the config file (distill:, cluster:, assess:,
    train:, select:).
    """
    from ..backends import Models
    from ..pipeline import run, run_configs

    cfgs = run_configs(lambda cls, section: stage_config_for(ctx, cls, section))
    cfgs.executor = executor_config(ctx, executor)
    echo = (lambda _: None) if as_json else click.echo
    summary = run(open_root(ctx), Models(open_root(ctx), load_config(ctx)), paths, cfgs, echo, stop_after,
                  tenant_of(ctx))
    if as_json:
        echo_json(summary)
        return
    plans = summary.get("select") or []
    for p in plans:
        if p["system"] == "uno":
            click.echo(f"cluster {p['cluster']:>4}: {p['path']} ({p['reason']})")
    click.echo("\n".join(funnel_lines(summary["funnel"])))


@click.command()
@click.option("--scorer", type=click.Choice(["embedding", "logprob"]),
              help="embedding: 1 − max cosine to the prior rules (default); logprob: yes/no probability "
                   "from the judge's logprobs (the embedded model, or a server that returns logprobs).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0),
              help="Gap at or above which a cluster is planned 'reflective' (default: the scorer's).")
@json_option
@click.pass_context
def assess(ctx: click.Context, scorer: str | None, threshold: float | None, as_json: bool) -> None:
    """Measure each cluster's cognitive gap and plan its path (primary or reflective)."""
    from ..assess import AssessConfig, run

    cfg = stage_config_for(ctx, AssessConfig, "assess", scorer=scorer, threshold=threshold)
    gaps = run(open_workspace(ctx), models_for(ctx), cfg)
    if as_json:
        echo_json([vars(g) for g in gaps])
        return
    click.echo(f"scorer {cfg.scorer}, threshold {cfg.threshold:g} (a gap at or above it plans 'reflective')")
    for g in gaps:
        click.echo(f"cluster {g.cluster:>4}: {g.n_logs:>5} logs scored, gap {g.gap:.3f} "
                   f"(mean {g.gap_mean:.3f}, max {g.gap_max:.3f}) → {g.plan}")


@click.command()
@click.option("--cluster", "cluster_id", type=int, help="Train only this cluster's modules.")
@click.option("--base-model", help="Hugging Face model folder to train on (default: the embedded model).")
@click.option("--profile", type=click.Choice(["auto", "gpu", "cpu"]),
              help="Defaults of unset settings: gpu (the paper's), cpu (minutes on 2 cores); auto picks by CUDA.")
@click.option("--epochs", type=click.IntRange(min=1), help=field_help(TrainConfig, "epochs"))
@click.option("--critic-epochs", type=click.IntRange(min=1), help=field_help(TrainConfig, "critic_epochs"))
@click.option("--max-length", type=click.IntRange(min=16), help=field_help(TrainConfig, "max_length"))
@executor_option
@json_option
@click.pass_context
def train(ctx: click.Context, cluster_id: int | None, base_model: str | None, profile: str | None,
          epochs: int | None, critic_epochs: int | None, max_length: int | None, executor: str | None,
          as_json: bool) -> None:
    """Train per-cluster LoRA experts (DPO+SFT) and critics (SFT).

    Without CUDA the `cpu` profile applies (2 epochs, LoRA r 8, sequences up to 1280 tokens; on 2
    cores a cluster of 20 pairs took 8 min for its expert and 4 for its critic); with CUDA the
    paper's settings. Every hyper-parameter can be set in the `train:` section of the config file (see
    `unolearn.train.TrainConfig`). On GPUs the same command trains in bf16; for several GPUs run it
    under `accelerate launch -m unolearn train ...`.
    """
    from ..train import TrainConfig, run

    cfg = stage_config_for(ctx, TrainConfig, "train", base_model=base_model, profile=profile, epochs=epochs,
                           critic_epochs=critic_epochs, max_length=max_length)

    def report(m: Any) -> None:
        if not as_json:
            state = "reused" if m.reused else f"trained in {m.seconds:.0f} s"
            click.echo(f"cluster {m.cluster}: {m.kind} {m.id} ({m.n_train} train / {m.n_val} val, {state})")

    modules = run(open_workspace(ctx), cfg, cluster_id, on_module=report, executor=executor_config(ctx, executor))
    if as_json:
        echo_json([vars(m) for m in modules])
    elif not modules:
        click.echo("nothing to train (clusters with too few pairs get no expert; see --help)")


@click.command("select")
@executor_option
@json_option
@click.pass_context
def select_cmd(ctx: click.Context, executor: str | None, as_json: bool) -> None:
    """Validate each expert's epochs with the judge and fix every cluster's final path."""
    from ..selection import SelectConfig, run

    cfg = stage_config_for(ctx, SelectConfig, "select")
    plans = run(open_workspace(ctx), models_for(ctx), cfg, executor=executor_config(ctx, executor))
    if as_json:
        echo_json([p.model_dump() for p in plans])
        return
    for p in plans:
        where = f" {p.module_id}@{p.epoch}" if p.module_id else ""
        click.echo(f"cluster {p.cluster:>4} {p.system:<10} → {p.path}{where} ({p.reason})")
