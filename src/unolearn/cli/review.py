"""What people review: rulebooks (approve, reject), clusters, modules, the HTML report."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    echo_json,
    json_option,
    models_for,
    open_workspace,
    stage_config_for,
)


@click.group()
def rulebook() -> None:
    """Build and review the cluster rulebooks (the guide path's rules before the question)."""


@rulebook.command("build")
@json_option
@click.pass_context
def rulebook_build(ctx: click.Context, as_json: bool) -> None:
    """Rebuild every cluster's rulebook from its training logs (`unolearn run` does this after assess)."""
    from ..rulebook import RulebookConfig, run, summary
    from ..train import TrainConfig

    ws = open_workspace(ctx)
    entries = run(ws, models_for(ctx), stage_config_for(ctx, RulebookConfig, "rulebook"),
                  split=stage_config_for(ctx, TrainConfig, "train"))
    out = summary(entries, ws.has_identified_users())
    if "warning" in out:
        click.echo(f"warning: {out['warning']}", err=True)
    echo_json(out) if as_json else click.echo(
        f"{out['entries']} entries: " + ", ".join(f"{n} {s}" for s, n in sorted(out["by_status"].items())))


@rulebook.command("list")
@click.option("--cluster", "cluster_id", type=int, help="Only this cluster's entries.")
@json_option
@click.pass_context
def rulebook_list(ctx: click.Context, cluster_id: int | None, as_json: bool) -> None:
    """Every entry: id, cluster, status, users and logs behind it, novelty, text."""
    entries = open_workspace(ctx).rulebook(cluster_id)
    if as_json:
        echo_json([{**e.model_dump(exclude={"members"}), "n_logs": e.n_logs, "n_users": e.n_users}
                   for e in entries])
        return
    if not entries:
        click.echo("no rulebook entries: run `unolearn run` (or `unolearn rulebook build`)")
    for e in entries:
        novelty = "–" if e.novelty is None else f"{e.novelty:.2f}"
        click.echo(f"{e.id}  cluster {e.cluster:>3}  {e.status:<12} users {e.n_users:>2} logs {e.n_logs:>2} "
                   f"novelty {novelty:>4}  {e.text[:90]}")


@rulebook.command("show")
@click.argument("entry_id")
@json_option
@click.pass_context
def rulebook_show(ctx: click.Context, entry_id: str, as_json: bool) -> None:
    """One entry with the logs, users and rules behind it (a unique id prefix is enough); ``+`` marks the
    wordings that may stand for a kept entry in a prompt (screened, within merge_similarity of its text)."""
    e = open_workspace(ctx).rulebook_entry(entry_id)
    if as_json:
        echo_json(e.model_dump())
        return
    click.echo(f"{e.id} (cluster {e.cluster}, {e.status}"
               + (f", contradicted by {e.contradicted_by}" if e.contradicted_by else "") + f"): {e.text}")
    for m in e.members:
        click.echo(f"  {'+' if e.lends(m) else ' '} {m.log_id}  {m.user:<28} {m.rule[:90]}")


def _decide(ctx: click.Context, entry_id: str, decision: str) -> None:
    ws = open_workspace(ctx)
    entry = ws.rulebook_entry(entry_id)
    vector, embedder = None, None
    if decision == "rejected":  # its embedding recognises paraphrases in later builds
        models = models_for(ctx)
        vector, embedder = models.embedder.embed([entry.text])[0], models.embedder.model_id
    n = ws.decide_entry(entry, decision, vector, embedder)
    extra = (" (their rules and revised pairs removed: the next `unolearn run` redoes what learned from them)"
             if decision == "rejected" else "")
    click.echo(f"{entry.id} {decision} for {n} logs{extra}")


@rulebook.command("approve")
@click.argument("entry_id")
@click.pass_context
def rulebook_approve(ctx: click.Context, entry_id: str) -> None:
    """Keep an entry in its cluster's rulebook whatever its support and novelty."""
    _decide(ctx, entry_id, "approved")


@rulebook.command("reject")
@click.argument("entry_id")
@click.pass_context
def rulebook_reject(ctx: click.Context, entry_id: str) -> None:
    """Veto an entry: it never reaches a prompt again, and what was derived from its rules is redone."""
    _decide(ctx, entry_id, "rejected")


@click.group()
def clusters() -> None:
    """Inspect the clusters."""


@clusters.command("list")
@json_option
@click.pass_context
def clusters_list(ctx: click.Context, as_json: bool) -> None:
    """Each cluster's size, example queries, top rules, gap and plan."""
    from ..report import cluster_summaries

    rows = cluster_summaries(open_workspace(ctx))
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no clusters yet: run `unolearn cluster`")
    for r in rows:
        gap = "not assessed" if r["gap"] is None else f"gap {r['gap']:.2f} → {r['plan']}"
        rounds = f", changed in clusterings {r['rounds']}" if r["rounds"] else ""
        click.echo(f"cluster {r['cluster']} ({r['size']} logs, {gap}{rounds})")
        for q in r["top_queries"]:
            click.echo(f"    query: {' '.join(q.split())[:100]}")
        for rule in r["top_rules"]:
            click.echo(f"    rule:  {rule[:100]}")


@click.group()
def modules() -> None:
    """Inspect the trained experience modules."""


@modules.command("list")
@json_option
@click.pass_context
def modules_list(ctx: click.Context, as_json: bool) -> None:
    """Every trained expert and critic with its provenance and losses."""
    from ..train import list_modules

    rows = list_modules(open_workspace(ctx))
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no modules yet: run `unolearn train`")
    for m in rows:
        losses = m["metrics"].get("train_loss", {})
        last = f"{list(losses.values())[-1]:.3f}" if losses else "–"
        click.echo(f"cluster {m['cluster']:>4} {m['kind']:<6} {m['id']} epochs {m['epochs']} "
                   f"train/val {m['n_train']}/{m['n_val']} last loss {last} ({m['seconds']} s)")


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the HTML (default: artifacts/report.html in the workspace).")
@click.pass_context
def report(ctx: click.Context, output: Path | None) -> None:
    """Write a static HTML report: cluster map, clusters with gap and plan, noise-filter counts."""
    from ..report import write_report

    models = models_for(ctx)
    click.echo(str(write_report(open_workspace(ctx), models.embedder, output)))
