"""The ``unolearn`` command line: thin commands that parse, call the library and print."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import CONFIG_FILE, BackendsConfig, load_backends, stage_config
from .config_file import check_config_file
from .errors import ConfigError, InputError, UnolearnError, WorkspaceError, one_line
from .funnel import funnel_lines
from .names import SERVED_SYSTEMS, STAGES
from .store import Workspace, resolve_dir, write_jsonl_atomic
from .store.dialect import check_url, database_errors


def echo_json(obj: Any) -> None:
    """Print ``obj`` as one JSON document on stdout."""
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def open_root(ctx: click.Context) -> Workspace:
    """Open the workspace named by the group's ``--workspace`` option (its default tenant; once per invocation)."""
    obj = ctx.find_root().ensure_object(dict)
    if "ws" not in obj:
        checked_config(ctx)
        obj["ws"] = ctx.with_resource(Workspace.open(obj.get("workspace"), obj.get("store")))
    return obj["ws"]


def open_workspace(ctx: click.Context) -> Workspace:
    """The workspace of the tenant the group's ``--tenant`` names (default: the default tenant's), opened once."""
    from .tenants import open_tenant

    obj = ctx.find_root().ensure_object(dict)
    if "tenant_ws" not in obj:
        root, name = open_root(ctx), obj.get("tenant")
        obj["tenant_ws"] = root if name is None else ctx.with_resource(open_tenant(root, name))
    return obj["tenant_ws"]


def tenant_of(ctx: click.Context) -> str | None:
    """The tenant the group's ``--tenant`` names (None: not given)."""
    return ctx.find_root().obj.get("tenant")


def checked_config(ctx: click.Context) -> Path:
    """This invocation's config file, every section of it validated (once): a wrong key in any section stops
    every command, not only the one that reads it."""
    obj = ctx.find_root().obj
    file = obj["config_file"] or resolve_dir(obj.get("workspace")) / CONFIG_FILE
    if obj["config_file"] and not file.exists():
        raise InputError("no such file", file=str(file))
    if not obj.get("config_checked"):
        check_config_file(file)
        obj["config_checked"] = True
    return file


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


class PromptFiles(click.ParamType):
    """A prompt file path, or a packaged set's name (``memorybench:test``): converts to a list of paths."""

    name = "PROMPTS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[Path]:
        from .prompt_sets import resolve

        if isinstance(value, list):
            return value
        try:
            paths = resolve(str(value))
        except InputError as e:
            self.fail(str(e), param, ctx)
        for p in paths:
            if not p.is_file():
                self.fail(f"{p}: no such file", param, ctx)
        return paths


class PreferencesSpec(click.ParamType):
    """A preference file's path, or ``random:SEED`` (one drawn at random, :mod:`unolearn.prefgen`)."""

    name = "FILE|random:SEED"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from .prefgen import is_random, parse_seed

        if is_random(value):
            try:
                parse_seed(value)
            except ConfigError as e:
                self.fail(str(e), param, ctx)
            return value
        path = Path(value)
        if not path.is_file():
            self.fail(f"{value}: no such file", param, ctx)
        return path


PREFERENCES_HELP = ("Preference file (YAML or JSON), or random:SEED for one drawn at random (judge changes on seeds "
                    "you did not develop on); default: the packaged one.")


def flat(groups: tuple[list[Path], ...]) -> list[Path]:
    """The paths of several :class:`PromptFiles` arguments, in order."""
    return [p for g in groups for p in g]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="unolearn")
@click.option("-d", "--workspace", type=click.Path(file_okay=False), envvar="UNOLEARN_HOME",
              help="Workspace directory (artifacts, config.yaml, and the SQLite database unless --store names "
                   "another store). Default: $UNOLEARN_HOME, else ./unolearn-workspace.")
@click.option("--store", envvar="UNOLEARN_STORE", metavar="URL",
              help="Where the workspace's tables live: sqlite:///PATH, or postgresql://USER@HOST[:PORT]/DB shared by "
                   "several workspace folders, machines and proxy replicas [env UNOLEARN_STORE]. Default: the "
                   "workspace's unolearn.sqlite3. Artifacts (adapters, reports) stay in the workspace directory.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Configuration file (YAML). Default: config.yaml in the workspace.")
@click.option("--backend", type=click.Choice(["embedded", "openai", "hf"]),
              help="Generator backend [env UNOLEARN_BACKEND]. Default: embedded.")
@click.option("--base-url", help="OpenAI-compatible server of the generator, e.g. "
                                 "http://localhost:8000/v1 [env UNOLEARN_BASE_URL].")
@click.option("--model", help="Generator model: the served name (openai) or a GGUF path (embedded) "
                              "[env UNOLEARN_MODEL].")
@click.option("--no-cache", is_flag=True, help="Bypass the workspace's response and embedding cache.")
@click.option("--tenant", envvar="UNOLEARN_TENANT", metavar="NAME",
              help="Work on this tenant's logs, clusters, rulebook, modules and plans [env UNOLEARN_TENANT]. "
                   "Default: the default tenant (logs that name none); `run` and `forget` then cover every "
                   "tenant, and `ingest` stores each log under the tenant it names.")
@click.option("--profile", type=click.Choice(["auto", "cpu", "gpu"]),
              help="Costly settings of every stage (token budgets, revisions, judge samples, epochs): "
                   "cpu for a laptop, gpu for the paper's; auto (default) picks cpu for the embedded "
                   "model, gpu for a server [env UNOLEARN_PROFILE, config `profile:`].")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None, store: str | None, config_file: Path | None,
        backend: str | None, base_url: str | None, model: str | None, no_cache: bool, tenant: str | None,
        profile: str | None) -> None:
    """unolearn: make a deployed LLM system better from its own user logs.

    Logs of users reacting to answers are distilled into rules and preference pairs,
    clustered by topic and feedback, and turned into per-cluster LoRA experts or critics
    (the UNO method). Start with `unolearn ingest LOGS.jsonl`, then `unolearn logs stats`.
    """
    obj = ctx.ensure_object(dict)
    obj["workspace"] = workspace
    obj["store"] = check_url(store) if store else None
    obj["config_file"] = config_file
    obj["profile"] = profile
    obj["tenant"] = _tenant_option(tenant)
    if backend is None and base_url:
        backend = "openai"
    obj["overrides"] = {"generator": {"backend": backend, "base_url": base_url, "model": model},
                        "cache": {"enabled": False if no_cache else None}}


def _tenant_option(value: str | None) -> str | None:
    """The ``--tenant`` value checked (None: not given)."""
    from .tenants import check_tenant

    if value is None:
        return None
    try:
        return check_tenant(value, "--tenant")
    except ValueError as e:
        raise click.BadParameter(str(e).removeprefix("--tenant: "), param_hint="--tenant") from None


def load_config(ctx: click.Context) -> BackendsConfig:
    """The effective backend configuration: defaults → config file → environment → flags."""
    return load_backends(checked_config(ctx), ctx.find_root().obj["overrides"])


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
    reported as FILE:LINE: REASON on stderr and kept in the workspace's `rejected` table. Personal data
    (e-mail, phone, card, IBAN, SSN, Chinese resident ID, IP, credentials in URLs) is replaced by
    placeholders such as <EMAIL_1> before anything is stored (config.yaml `redact:`).
    Exits 0 when at least one valid record was read, 2 when none was.
    """
    from .ingest import ingest as run_ingest
    from .redact import RedactConfig, Redactor, warn_if_disabled

    ws = open_root(ctx)
    redact = stage_config_for(ctx, RedactConfig, "redact")
    warn_if_disabled(redact, "ingest")

    def report(rej: Any) -> None:
        click.echo(f"{rej.file}:{rej.line}: {rej.reason}", err=True)

    result = run_ingest(ws, list(paths), fmt, on_reject=report, progress=False if as_json else None,
                        redactor=Redactor(redact), tenant=tenant_of(ctx))
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(f"ingested {result.ingested}, duplicates {result.duplicates}, "
                   f"rejected {result.rejected}")
    if result.ingested + result.duplicates == 0:
        raise InputError("no valid record found in the input")


@cli.command("forget")
@click.option("--user", "users", multiple=True, metavar="ID", help="Forget this user's logs, served answers, "
              "feedback and rejected records (repeatable).")
@click.option("--log", "log_ids", multiple=True, metavar="ID", help="Forget this log (an id or unique prefix; "
              "repeatable), with its served answer and feedback.")
@click.option("--before", metavar="DATE", help="Forget everything ingested (served, rejected) before this "
              "ISO-8601 date or time (UTC unless it says otherwise).")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--compact", is_flag=True, help="Also on its own: vacuum the store, so that rows deleted earlier are "
              "unreadable in its files (when another process kept a deletion's vacuum from finishing).")
@json_option
@click.pass_context
def forget_cmd(ctx: click.Context, users: tuple[str, ...], log_ids: tuple[str, ...], before: str | None,
               dry_run: bool, compact: bool, as_json: bool) -> None:
    """Delete a user's (a log's, a period's) data and everything derived from it.

    Removes the logs, served answers and feedback, rejected records, and what was made from them: rules,
    pairs, cluster members, cached model answers and vectors, rulebook entries, validation rows. Modules
    (experts, critics, guides) trained or validated on them are retired at once: their adapter folders are
    deleted, their plans fall back to the base model, and a new plan is published for running proxies.
    The next `unolearn run` trains replacements. On SQLite the database is vacuumed so no deleted text
    stays in the file or its WAL. Every tenant's store is searched, unless --tenant names one.
    """
    from .forget import forget_tenants, parse_before

    result = forget_tenants(open_root(ctx), tenant_of(ctx), users=users, logs=log_ids,
                            before=before and parse_before(before), dry_run=dry_run, compact=compact)
    if as_json:
        echo_json(result.as_dict())
        return
    if result.nothing:
        click.echo("the store is compacted" if compact and not (users or log_ids or before) else
                   "nothing matched: no log, served answer or rejected record of that user, id or date")
        return
    verb = "would remove" if dry_run else "removed"
    rows = ", ".join(f"{k} {v}" for k, v in result.removed.items() if v)
    click.echo(f"{verb}: {rows}")
    if result.retired:
        kinds = ", ".join(f"{m['kind']} {m['id'][:16]}" for m in result.retired)
        click.echo(f"{'would retire' if dry_run else 'retired'} {len(result.retired)} modules: {kinds}"
                   + ("" if dry_run else f" ({result.adapter_dirs} adapter folders deleted; `unolearn run` "
                                         "trains replacements)"))


@cli.command("tenants")
@json_option
@click.pass_context
def tenants_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the workspace's tenants: their logs, users and the plan each one is served.

    A log's tenant is its `tenant` field (or metadata.tenant), or `--tenant` at ingest; logs without one
    are the default tenant's. Each tenant learns only from its own logs; the proxy serves a key's tenant
    (config.yaml `serve: {keys: {KEY: TENANT}}`).
    """
    from .tenants import each_tenant

    rows = []
    with each_tenant(open_root(ctx)) as tenants:
        for name, ws in tenants:
            rows.append({"tenant": name, "logs": ws.count("logs"), "identified_users": ws.has_identified_users(),
                         "plan_id": ws.latest_snapshot_id(), "where": ws.where})
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        click.echo(f"{r['tenant']:<24} {r['logs']:>8} logs  plan {r['plan_id'] or '-':<6} {r['where']}")


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


def config_path(ctx: click.Context) -> Path:
    """The config file of this invocation: ``--config``, else the workspace's config.yaml."""
    return ctx.find_root().obj["config_file"] or open_root(ctx).root / CONFIG_FILE


def profile_for(ctx: click.Context) -> tuple[str, bool]:
    """The resolved profile (cpu or gpu) of this invocation (flag → environment → config file → auto),
    and whether it was ``auto``."""
    from .config import read_config_file
    from .profiles import requested, resolve

    name = requested(read_config_file(config_path(ctx)), ctx.find_root().obj.get("profile"))
    return resolve(name, load_config(ctx).generator.backend), name == "auto"


def stage_config_for(ctx: click.Context, cls: type, section: str, **flags: Any) -> Any:
    """A stage's config: defaults → the profile's values → the config file's ``section`` → the flags set.

    Under ``auto`` training keeps its own ``auto`` (by CUDA), whatever serves the generator.
    """
    profile, auto = profile_for(ctx)
    return stage_config(cls, config_path(ctx), section, flags, None if auto and section == "train" else profile)


@cli.command()
@click.option("--revisions", "n_revisions", type=click.IntRange(min=1),
              help="Candidates of each kind per log (default 3; profile cpu: 1); the judge's best becomes "
                   "`chosen`.")
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
               f"feedback rule sets ({out['usable_feedback']} usable, {out['filtered_as_noise']} noise, of which "
               f"{out['gated_as_noise']} by the gate), rules dropped {out['rules_rejected'] or 0}, "
               f"pairs {out['pairs']} ({out['unpaired']} logs without a candidate that passed the guards; "
               f"candidates set aside {out['guarded'] or 0}), failed requests {out['failed']}")


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

    records = export_pairs(open_workspace(ctx), fmt)
    if output is None:
        for r in records:
            click.echo(json.dumps(r, ensure_ascii=False))
        return
    n = write_jsonl_atomic(output, records)
    click.echo(f"wrote {n} pairs to {output}", err=True)


@cli.command("cluster")
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
    from .cluster import ClusterConfig, run, sweep

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


@cli.command("run")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--stop-after", type=click.Choice(STAGES), help="End after this stage.")
@json_option
@click.pass_context
def run_cmd(ctx: click.Context, paths: tuple[Path, ...], stop_after: str | None, as_json: bool) -> None:
    """The main job: ingest PATHS (if given) → distill → cluster → assess → rulebook → train → select.

    Each log goes to its tenant's store; then every tenant learns in turn from its own logs (only --tenant's
    when given; a tenant without logs is skipped).

    Resumable: re-running continues where an interrupted run stopped, and repeats no finished model
    call or training. Each stage reads its section of the config file (distill:, cluster:, assess:,
    train:, select:).
    """
    from .backends import Models
    from .pipeline import run, run_configs

    cfgs = run_configs(lambda cls, section: stage_config_for(ctx, cls, section))
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


@cli.command()
@click.option("--scorer", type=click.Choice(["embedding", "logprob"]),
              help="embedding: 1 − max cosine to the prior rules (default); logprob: yes/no probability "
                   "from the judge's logprobs (the embedded model, or a server that returns logprobs).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0),
              help="Gap at or above which a cluster is planned 'reflective' (default: the scorer's).")
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
    click.echo(f"scorer {cfg.scorer}, threshold {cfg.threshold:g} (a gap at or above it plans 'reflective')")
    for g in gaps:
        click.echo(f"cluster {g.cluster:>4}: {g.n_logs:>5} logs scored, gap {g.gap:.3f} "
                   f"(mean {g.gap_mean:.3f}, max {g.gap_max:.3f}) → {g.plan}")


@cli.group()
def rulebook() -> None:
    """Build and review the cluster rulebooks (the guide path's rules before the question)."""


@rulebook.command("build")
@json_option
@click.pass_context
def rulebook_build(ctx: click.Context, as_json: bool) -> None:
    """Rebuild every cluster's rulebook from its training logs (`unolearn run` does this after assess)."""
    from .rulebook import RulebookConfig, run, summary
    from .train import TrainConfig

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
    """One entry with the logs, users and rules behind it (a unique id prefix is enough)."""
    e = open_workspace(ctx).rulebook_entry(entry_id)
    if as_json:
        echo_json(e.model_dump())
        return
    click.echo(f"{e.id} (cluster {e.cluster}, {e.status}"
               + (f", contradicted by {e.contradicted_by}" if e.contradicted_by else "") + f"): {e.text}")
    for m in e.members:
        click.echo(f"    {m.log_id}  {m.user:<28} {m.rule[:90]}")


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
        rounds = f", changed in clusterings {r['rounds']}" if r["rounds"] else ""
        click.echo(f"cluster {r['cluster']} ({r['size']} logs, {gap}{rounds})")
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


@cli.command()
@click.option("--cluster", "cluster_id", type=int, help="Train only this cluster's modules.")
@click.option("--base-model", help="Hugging Face model folder to train on (default: the embedded model).")
@click.option("--profile", type=click.Choice(["auto", "gpu", "cpu"]),
              help="Defaults of unset settings: gpu (the paper's), cpu (minutes on 2 cores); auto picks by CUDA.")
@click.option("--epochs", type=click.IntRange(min=1), help="Expert epochs (default: 8 gpu, 2 cpu).")
@click.option("--critic-epochs", type=click.IntRange(min=1), help="Critic epochs (default: 8 gpu, 2 cpu).")
@click.option("--max-length", type=click.IntRange(min=16),
              help="Token limit of a training sequence (default: 1024 gpu, 1280 cpu).")
@json_option
@click.pass_context
def train(ctx: click.Context, cluster_id: int | None, base_model: str | None, profile: str | None,
          epochs: int | None, critic_epochs: int | None, max_length: int | None, as_json: bool) -> None:
    """Train per-cluster LoRA experts (DPO+SFT) and critics (SFT).

    Without CUDA the `cpu` profile applies (2 epochs, LoRA r 8, sequences up to 1280 tokens; on 2
    cores a cluster of 20 pairs took 8 min for its expert and 4 for its critic); with CUDA the
    paper's settings. Every hyper-parameter can be set in the `train:` section of the config file (see
    `unolearn.train.TrainConfig`). On GPUs the same command trains in bf16; for several GPUs run it
    under `accelerate launch -m unolearn train ...`.
    """
    from .train import TrainConfig, run

    cfg = stage_config_for(ctx, TrainConfig, "train", base_model=base_model, profile=profile, epochs=epochs,
                           critic_epochs=critic_epochs, max_length=max_length)

    def report(m: Any) -> None:
        if not as_json:
            state = "reused" if m.reused else f"trained in {m.seconds:.0f} s"
            click.echo(f"cluster {m.cluster}: {m.kind} {m.id} ({m.n_train} train / {m.n_val} val, {state})")

    modules = run(open_workspace(ctx), cfg, cluster_id, on_module=report)
    if as_json:
        echo_json([vars(m) for m in modules])
    elif not modules:
        click.echo("nothing to train (clusters with too few pairs get no expert; see --help)")


@cli.command("select")
@json_option
@click.pass_context
def select_cmd(ctx: click.Context, as_json: bool) -> None:
    """Validate each expert's epochs with the judge and fix every cluster's final path."""
    from .selection import SelectConfig, run

    cfg = stage_config_for(ctx, SelectConfig, "select")
    plans = run(open_workspace(ctx), models_for(ctx), cfg)
    if as_json:
        echo_json([vars(p) for p in plans])
        return
    for p in plans:
        where = f" {p.module_id}@{p.epoch}" if p.module_id else ""
        click.echo(f"cluster {p.cluster:>4} {p.system:<10} → {p.path}{where} ({p.reason})")


@cli.command("answer")
@click.argument("query")
@click.option("--system", type=click.Choice(SERVED_SYSTEMS), default="uno",
              show_default=True, help="uno: expert, critic or base per the plan; uno-single: expert or base; "
                                      "uno-guided: the best validated of expert, rulebook guide and critic; "
                                      "base: no memory.")
@click.option("--max-tokens", type=click.IntRange(min=1),
              help="Token budget of the answer (default: the profile's, as in `bench quality`: 1024; cpu 256).")
@json_option
@click.pass_context
def answer_cmd(ctx: click.Context, query: str, system: str, max_tokens: int | None, as_json: bool) -> None:
    """Answer QUERY through the published plan, as the proxy would, and show the path taken (cluster,
    module, epoch, plan id)."""
    import asyncio

    from .answer import Route, answer
    from .bench.quality import QualityConfig
    from .snapshot import PlanSnapshot

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


@cli.group()
def modules() -> None:
    """Inspect the trained experience modules."""


@modules.command("list")
@json_option
@click.pass_context
def modules_list(ctx: click.Context, as_json: bool) -> None:
    """Every trained expert and critic with its provenance and losses."""
    from .train import list_modules

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


@cli.command()
@click.argument("prompts", nargs=-1, required=True, type=PromptFiles())
@click.option("--preferences", type=PreferencesSpec(), help=PREFERENCES_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulated users.")
@click.option("--rounds", type=click.IntRange(0, 10), help="Feedback rounds at most (default 3; profile cpu: 1).")
@click.option("--max-tokens", type=click.IntRange(min=1),
              help="Token budget of every answer (default 1024; profile cpu: 256).")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N prompts of each file.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the simulated logs (MemoryBench JSONL).")
@json_option
@click.pass_context
def simulate(ctx: click.Context, prompts: tuple[list[Path], ...], preferences: Path | str | None, seed: int,
             rounds: int | None, max_tokens: int | None, limit: int | None, output: Path, as_json: bool) -> None:
    """Simulate users with hidden, code-checkable preferences on MemoryBench-format PROMPTS.

    PROMPTS are files, or the packaged sets: memorybench:train, memorybench:test, or one of them such as
    memorybench:nfcats_train (see `unolearn data --help`).

    The configured chat model answers each prompt; the simulated user checks the answer against the
    constraints of its dataset and complains (up to --rounds times) with noise as the preference file
    says. The output is MemoryBench JSONL that `unolearn ingest` reads like real logs.
    """
    from .simulate import SimulateConfig, load_preferences, load_prompt_records, summarize
    from .simulate import simulate as run_sim

    cfg = stage_config_for(ctx, SimulateConfig, "simulate", rounds=rounds, max_tokens=max_tokens)
    records = load_prompt_records(flat(prompts), limit)
    prefs = load_preferences(preferences)
    models = models_for(ctx)
    out = run_sim(records, prefs, models.generator, seed, cfg.rounds, max_tokens=cfg.max_tokens,
                  logs_per_user=cfg.logs_per_user, progress=False if as_json else None)
    write_jsonl_atomic(output, out)
    summary = {"output": str(output), **summarize(out)}
    echo_json(summary) if as_json else click.echo(
        f"wrote {len(out)} simulated logs to {output}: {summary['violated_first']} first answers violated a "
        f"constraint, {summary['feedback_rounds']} feedback rounds, noise {summary['noise']}")


@cli.command("preferences")
@click.argument("spec", type=PreferencesSpec(), required=False)
def preferences_cmd(spec: Path | str | None) -> None:
    """Print a preference file as the simulator reads it (YAML): SPEC is a file, random:SEED, or nothing for
    the packaged default. Review a random file, or save it to edit: `unolearn preferences random:7 > p.yaml`."""
    import yaml

    from .simulate import load_preferences

    prefs = load_preferences(spec).model_dump(mode="json", exclude_none=True)
    click.echo(yaml.safe_dump(prefs, allow_unicode=True, sort_keys=False, width=120), nl=False)


@cli.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=False)
@click.option("--train-per-set", type=click.IntRange(min=1), help="Train prompts simulated per dataset (4).")
@click.option("--test-per-set", type=click.IntRange(min=1), help="Test prompts benchmarked per dataset (2).")
@click.option("--preferences", type=PreferencesSpec(), help=PREFERENCES_HELP)
@json_option
@click.pass_context
def demo(ctx: click.Context, data_dir: Path | None, train_per_set: int | None, test_per_set: int | None,
         preferences: Path | str | None, as_json: bool) -> None:
    """The end-to-end example: simulate users, run the main job, benchmark every system.

    DATA_DIR holds the MemoryBench prompt files (nfcats/lexeval_qa/hellobench_ak_qa _train/_test.jsonl);
    without it the packaged prompts are used (`unolearn data export DIR` writes them out).
    Resumable like `unolearn run`; prints the comparison table at the end.
    """
    from .demo import DemoConfig, run, stages_for

    cfg = stage_config_for(ctx, DemoConfig, "demo", train_per_set=train_per_set, test_per_set=test_per_set,
                           preferences=None if preferences is None else str(preferences))
    stages = stages_for(lambda cls, section: stage_config_for(ctx, cls, section))
    echo = (lambda _: None) if as_json else click.echo
    result = run(open_workspace(ctx), models_for(ctx), data_dir, cfg, echo, stages)
    if as_json:
        echo_json(result)
        return
    click.echo(quality_table(result))
    click.echo("\n".join(funnel_lines(result["funnel"])))
    click.echo(f"({result['minutes']} minutes in all; `unolearn report` adds the chart to the HTML report)")


@cli.command()
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
    setting of the config's `serve:` section applies; a flag given here wins.
    """
    from .redact import RedactConfig, warn_if_disabled
    from .serve import ServeConfig
    from .serve import serve as run_server

    ws = open_workspace(ctx)
    flags = {"upstream": upstream, "host": host, "port": port, "system": system, "load_adapters": load_adapters,
             "reload_interval_s": reload_interval, "workers": workers, "insecure": insecure}
    cfg = stage_config(ServeConfig, config_path(ctx), "serve", flags)
    if bool(cfg.upstream) == embedded:
        raise InputError("give exactly one of --upstream URL (or `serve: {upstream}` in config.yaml) or --embedded")
    redact = stage_config_for(ctx, RedactConfig, "redact")
    warn_if_disabled(redact, "serve")
    run_server(ws.root, cfg, store=ws.store, backends=load_config(ctx), redact=redact)


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


@cli.command()
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
    from .doctor import run

    obj = ctx.find_root().obj
    report = run(load_config(ctx), resolve_dir(obj.get("workspace")), generate=not no_generate, store=obj.get("store"))
    if as_json:
        echo_json(report)
    else:
        for c in report["checks"]:
            mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[c["status"]]
            click.echo(f"{mark} {c['name']:<10} {c['detail']}" + (f"  → {c['fix']}" if c["fix"] else ""))
    if not report["ok"]:
        sys.exit(1)


@cli.group()
def data() -> None:
    """The MemoryBench prompt sets shipped with unolearn (MIT; NFCats en, LexEval-QA zh, HelloBench en).

    Commands that take prompt files also take their names: memorybench:train and memorybench:test (the
    three sets of a split), or one file such as memorybench:lexeval_qa_test.
    """


@data.command("path")
def data_path() -> None:
    """Print the folder holding the packaged prompt files."""
    from .prompt_sets import packaged_dir

    click.echo(packaged_dir())


@data.command("export")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@json_option
def data_export(dest: Path, as_json: bool) -> None:
    """Copy the packaged prompt files, their LICENSE and README into DEST."""
    from .prompt_sets import export

    written = export(dest)
    echo_json({"dest": str(dest), "files": [p.name for p in written]}) if as_json else click.echo(
        f"wrote {len(written)} files to {dest}")


@cli.group()
def bench() -> None:
    """Benchmarks that print JSON figures measured on this machine."""


def refuse_store(ctx: click.Context, name: str) -> None:
    """A ConfigError when a store is named for a benchmark whose workspace lives in its own SQLite file (its
    folder is kept for later commands, so a scratch database would not do; the team's store must not)."""
    if ctx.find_root().obj.get("store"):
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
    from .bench.ingest import bench_ingest as run

    out = run(n, store=ctx.find_root().obj.get("store"))
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
    from .bench.throughput import bench_throughput

    out = bench_throughput(n=n, latency_s=latency, concurrency=concurrency)
    echo_json(out) if as_json else click.echo(
        f"sequential {out['sequential_rps']:.1f} req/s, concurrent {out['concurrent_rps']:.1f} req/s "
        f"({out['ratio']:.1f}×)")


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
@click.option("--epochs", type=click.IntRange(min=1), help="Expert epochs (default: the profile's).")
@click.option("--critic-epochs", type=click.IntRange(min=1), help="Critic epochs (default: the profile's).")
@click.option("--max-length", type=click.IntRange(min=16), help="Token limit of a training sequence.")
@json_option
@click.pass_context
def bench_train_cmd(ctx: click.Context, pairs: int, answer_words: int, keep: Path | None, base_model: str | None,
                    profile: str, epochs: int | None, critic_epochs: int | None, max_length: int | None,
                    as_json: bool) -> None:
    """Seconds to train one cluster's expert and critic on this machine (synthetic pairs)."""
    refuse_store(ctx, "train")
    from .backends import make_embedder
    from .bench.train import bench_train
    from .config import load_backends
    from .train import TrainConfig

    embedder = make_embedder(load_backends(None).embedder)  # the defaults and environment a fresh workspace has
    flags = {"base_model": base_model, "profile": profile, "epochs": epochs, "critic_epochs": critic_epochs,
             "max_length": max_length}
    cfg = TrainConfig(**{k: v for k, v in flags.items() if v is not None})
    out = bench_train(pairs, cfg, embedder, answer_words=answer_words, workspace=keep)
    echo_json(out) if as_json else click.echo(
        f"{pairs} pairs: base model ready in {out['prepare_base_s']:.0f} s; "
        + ", ".join(f"{k} {out[k]['seconds']:.0f} s" for k in ("expert", "critic") if k in out)
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
    from .bench.demo import bench_demo

    flags = [f for k, v in (("--train-per-set", train_per_set), ("--test-per-set", test_per_set))
             if v is not None for f in (k, str(v))]
    out = bench_demo(ws_dir, flags)
    echo_json(out) if as_json else click.echo(
        f"{out['wall_s'] / 60:.1f} min, process-tree peak {out['peak_tree_mb']} MB ({out['n_prompts']} test prompts)")


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
    from .bench.online import OnlineConfig, run_online
    from .simulate import load_preferences

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
    from .bench.cluster import bench_cluster

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
@click.option("--max-tokens", type=click.IntRange(min=1),
              help="Token budget of an answer (default 1024; profile cpu: 256).")
@click.option("--no-checklist", is_flag=True, help="Skip the judge's HelloBench checklist coverage.")
@json_option
@click.pass_context
def bench_quality_cmd(ctx: click.Context, train_logs: tuple[Path, ...], tests: tuple[list[Path], ...],
                      preferences: Path | str | None, limit: int | None, systems: str | None, max_tokens: int | None,
                      no_checklist: bool, as_json: bool) -> None:
    """Compare base, bm25, dense, rules, self-refine, uno-single, uno and uno-guided on test prompts in one run.

    Prints per system and dataset: constraint compliance (share of prompt × hidden constraint pairs
    satisfied), quality guards (LexEval ROUGE-L, HelloBench checklist coverage), prompt tokens and
    latency per query. Also adds a bar chart to `unolearn report`.
    """
    from .bench.quality import QualityConfig, run
    from .ingest import ingest as run_ingest
    from .simulate import load_preferences, load_prompt_records

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
             f"{'rougeL':>7} {'checklist':>9} {'prompt tok':>10} {'latency s':>9}"]
    for name, s in result["systems"].items():
        for ds, d in [("all", s), *s["per_dataset"].items()]:
            lines.append(f"{name:<11} {ds[:34]:<34} {d['n']:>4} {d.get('n_checks', '–'):>6} "
                         f"{f(d['compliance'], True):>10} {_vs_base(result, name, d) if ds == 'all' else '':>24} "
                         f"{f(d.get('rouge_l')):>7} {f(d.get('checklist')):>9} {d['prompt_tokens']:>10} "
                         f"{d['latency_s']:>9.2f}")
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
    from .bench.redact import bench_redact

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
    from .bench.screen import bench_screen

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
    from .bench.serve import bench_serve

    out = bench_serve(n=n, concurrency=concurrency, latency_s=latency, workers=workers,
                      store=ctx.find_root().obj.get("store"), redact=not no_redact)
    echo_json(out) if as_json else click.echo(
        f"proxy p50 {out['proxy']['p50_ms']:.1f} ms, direct p50 {out['direct']['p50_ms']:.1f} ms, added "
        f"{out['added_p50_ms']:.1f} ms; errors {out['errors']}, lost feedback {out['lost_feedback']}")




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
        click.echo(f"error: {one_line(e)}", err=True)
        sys.exit(e.exit_code)
    except BrokenPipeError:  # the reader went away (`... | head`): not an error; before OSError, its base
        sys.exit(0)
    except OSError as e:  # a file that cannot be read or written: say which, without a traceback
        click.echo(f"error: {one_line(e)}", err=True)
        sys.exit(1)
    except database_errors() as e:
        click.echo(f"error: workspace database: {one_line(e)}", err=True)
        sys.exit(WorkspaceError.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    if isinstance(rc, int) and rc:
        sys.exit(rc)
