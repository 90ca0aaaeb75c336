"""The ``unolearn`` command line: thin commands that parse, call the library and print.

One module per kind of command (logs, stages, review, serving, simulation, benchmarks), the helpers they share in
:mod:`.common`; every command is registered here, in one place.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__
from ..errors import UnolearnError, WorkspaceError, one_line
from ..store.dialect import check_url, database_errors
from .bench import bench
from .common import Invocation, tenant_option
from .logs import data, forget_cmd, ingest, logs, pairs, tenants_cmd
from .review import clusters, modules, report, rulebook
from .serving import answer_cmd, chat, config, doctor, serve
from .simulation import demo, preferences_cmd, simulate
from .stages import assess, cluster_cmd, distill, run_cmd, select_cmd, train


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
    if backend is None and base_url:
        backend = "openai"
    ctx.obj = Invocation(workspace=workspace, store=check_url(store) if store else None, config_file=config_file,
                         profile=profile, tenant=tenant_option(tenant),
                         overrides={"generator": {"backend": backend, "base_url": base_url, "model": model},
                                    "cache": {"enabled": False if no_cache else None}})


COMMANDS = (ingest, forget_cmd, tenants_cmd, logs, pairs, data,  # the logs
            distill, cluster_cmd, run_cmd, assess, train, select_cmd,  # the stages
            rulebook, clusters, modules, report,  # review
            answer_cmd, serve, config, chat, doctor,  # serving and checks
            simulate, preferences_cmd, demo, bench)  # simulation and benchmarks
for _command in COMMANDS:
    cli.add_command(_command)


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
