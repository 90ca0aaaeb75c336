"""Commands on the logs themselves: ingest, forget, tenants, inspection, pairs export, the packaged data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from ..readers import FORMATS
from ..store import write_jsonl_atomic
from .common import (
    echo_json,
    json_option,
    open_root,
    open_workspace,
    stage_config_for,
    tenant_of,
)


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATHS|langfuse+https://HOST")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              default="auto", show_default=True,
              help="Input format; 'auto' tells a platform's export (Langfuse, LangSmith, OpenTelemetry, "
                   "OpenInference) by its first record, and the other formats per record by their keys.")
@json_option
@click.pass_context
def ingest(ctx: click.Context, paths: tuple[str, ...], fmt: str, as_json: bool) -> None:
    """Store the logs of PATHS (JSONL or JSON-array files) in the workspace.

    `langfuse+https://HOST` pulls from a Langfuse server's public API what it holds since the last pull
    (keys from LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY); an interrupted pull resumes where it stopped.

    Records already stored are counted as duplicates and not added again. Invalid records are
    reported as FILE:LINE: REASON on stderr and kept in the workspace's `rejected` table. Personal data
    (e-mail, phone, card, IBAN, SSN, Chinese resident ID, IP, credentials in URLs) is replaced by
    placeholders such as <EMAIL_1> before anything is stored (config.yaml `redact:`).
    Exits 0 when at least one valid record was read, 2 when none was.
    """
    from ..ingest import ingest_args
    from ..redact import RedactConfig, Redactor, warn_if_disabled

    ws = open_root(ctx)
    redact = stage_config_for(ctx, RedactConfig, "redact")
    warn_if_disabled(redact, "ingest")

    def report(rej: Any) -> None:
        click.echo(f"{rej.file}:{rej.line}: {rej.reason}", err=True)

    result = ingest_args(ws, paths, fmt, on_reject=report, progress=False if as_json else None,
                        redactor=Redactor(redact), tenant=tenant_of(ctx))
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(f"ingested {result.ingested}, duplicates {result.duplicates}, "
                   f"rejected {result.rejected}")
    if result.ingested + result.duplicates == 0:
        raise InputError("no valid record found in the input")


@click.command("forget")
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
    from ..forget import forget_tenants, parse_before

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


@click.command("tenants")
@json_option
@click.pass_context
def tenants_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the workspace's tenants: their logs, users and the plan each one is served.

    A log's tenant is its `tenant` field (or metadata.tenant), or `--tenant` at ingest; logs without one
    are the default tenant's. Each tenant learns only from its own logs; the proxy serves a key's tenant
    (config.yaml `serve: {keys: {KEY: TENANT}}`).
    """
    from ..tenants import each_tenant

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


@click.group()
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


@logs.command("export")
@click.option("--with-feedback/--all", "with_feedback", default=False, show_default=True,
              help="Only the logs with feedback (a later user turn, an action or a rating), or every log.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (JSONL), as the logs are read.")
@click.pass_context
def logs_export(ctx: click.Context, with_feedback: bool, as_json: bool) -> None:
    """Print every stored log as unolearn's record: what an importer made of an export.

    Each log's id, query, first answer, feedback (the user turns after the first answer), actions (kind, turn,
    edited), rating, user, tenant, source, timestamp and messages; without --json a short block per log.
    The logs of the tenant `unolearn --tenant` names (default: the default tenant's), in id order.
    """
    from ..log_export import export_record, text_block

    found = False
    for log in open_workspace(ctx).iter_logs(with_feedback=True if with_feedback else None):
        if as_json:
            click.echo(json.dumps(export_record(log), ensure_ascii=False))
        else:
            click.echo(("\n" if found else "") + text_block(log))
        found = True
    if not found and not as_json:
        click.echo("no logs stored: `unolearn ingest LOGS.jsonl` stores some", err=True)


@click.group()
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
    from ..training_data import export_pairs

    records = export_pairs(open_workspace(ctx), fmt)
    if output is None:
        for r in records:
            click.echo(json.dumps(r, ensure_ascii=False))
        return
    n = write_jsonl_atomic(output, records)
    click.echo(f"wrote {n} pairs to {output}", err=True)


@click.group()
def data() -> None:
    """The MemoryBench prompt sets shipped with unolearn (MIT; NFCats en, LexEval-QA zh, HelloBench en).

    Commands that take prompt files also take their names: memorybench:train and memorybench:test (the
    three sets of a split), or one file such as memorybench:lexeval_qa_test.
    """


@data.command("path")
def data_path() -> None:
    """Print the folder holding the packaged prompt files."""
    from ..prompt_sets import packaged_dir

    click.echo(packaged_dir())


@data.command("export")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@json_option
def data_export(dest: Path, as_json: bool) -> None:
    """Copy the packaged prompt files, their LICENSE and README into DEST."""
    from ..prompt_sets import export

    written = export(dest)
    echo_json({"dest": str(dest), "files": [p.name for p in written]}) if as_json else click.echo(
        f"wrote {len(written)} files to {dest}")
