"""What every command shares: the workspace and tenant of this invocation, its configuration, the option types."""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import click

from ..config import CONFIG_FILE, BackendsConfig, load_backends, stage_config
from ..config_file import check_config_file
from ..errors import ConfigError, InputError
from ..store import Workspace, resolve_dir


def echo_json(obj: Any) -> None:
    """Print ``obj`` as one JSON document on stdout."""
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


@dataclass
class Invocation:
    """This invocation's shared state: what the group's options set, and what it opened (once)."""

    workspace: str | None = None
    store: str | None = None
    config_file: Path | None = None
    profile: str | None = None
    tenant: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    config_checked: bool = False
    root_ws: Workspace | None = None
    tenant_ws: Workspace | None = None


def invocation(ctx: click.Context) -> Invocation:
    """The invocation state that the ``unolearn`` group set up."""
    return ctx.find_root().ensure_object(Invocation)


def open_root(ctx: click.Context) -> Workspace:
    """Open the workspace named by the group's ``--workspace`` option (its default tenant; once per invocation)."""
    inv = invocation(ctx)
    if inv.root_ws is None:
        checked_config(ctx)
        inv.root_ws = ctx.with_resource(Workspace.open(inv.workspace, inv.store))
    return inv.root_ws


def open_workspace(ctx: click.Context) -> Workspace:
    """The workspace of the tenant the group's ``--tenant`` names (default: the default tenant's), opened once."""
    from ..tenants import open_tenant

    inv = invocation(ctx)
    if inv.tenant_ws is None:
        root = open_root(ctx)
        inv.tenant_ws = root if inv.tenant is None else ctx.with_resource(open_tenant(root, inv.tenant))
    return inv.tenant_ws


def tenant_of(ctx: click.Context) -> str | None:
    """The tenant the group's ``--tenant`` names (None: not given)."""
    return invocation(ctx).tenant


def checked_config(ctx: click.Context) -> Path:
    """This invocation's config file, every section of it validated (once): a wrong key in any section stops
    every command, not only the one that reads it."""
    inv = invocation(ctx)
    file = inv.config_file or resolve_dir(inv.workspace) / CONFIG_FILE
    if inv.config_file and not file.exists():
        raise InputError("no such file", file=str(file))
    if not inv.config_checked:
        check_config_file(file)
        inv.config_checked = True
    return file


def field_help(cls: type, name: str) -> str:
    """The help of an option that sets config field ``name`` of ``cls``: the field's own help, with its default
    (written once, in the dataclass, with what the profiles set)."""
    found = {f.name: f for f in fields(cls)}[name]
    text = found.metadata.get("help", "")
    default = found.default
    if default is MISSING or default is None or isinstance(default, bool):
        return text
    return f"{text} Default: {default}."


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
executor_option = click.option("--executor", type=click.Choice(["local", "ray"]),
                               help="Where the stage's jobs (distil chunks, trainings, clusters' "
                                    "validations) run: local (default) or ray, a Ray cluster (config.yaml "
                                    "`executor:` sets its address and resources).")


def executor_config(ctx: click.Context, kind: str | None) -> Any:
    """The ``executor:`` section of the config, its kind set by ``--executor`` when given."""
    from ..executor import ExecutorConfig

    return stage_config_for(ctx, ExecutorConfig, "executor", kind=kind)


class PromptFiles(click.ParamType):
    """A prompt file path, or a packaged set's name (``memorybench:test``): converts to a list of paths."""

    name = "PROMPTS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[Path]:
        from ..prompt_sets import resolve

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
        from ..prefgen import is_random, parse_seed

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


def tenant_option(value: str | None) -> str | None:
    """The ``--tenant`` value checked (None: not given)."""
    from ..tenants import check_tenant

    if value is None:
        return None
    try:
        return check_tenant(value, "--tenant")
    except ValueError as e:
        raise click.BadParameter(str(e).removeprefix("--tenant: "), param_hint="--tenant") from None


def load_config(ctx: click.Context) -> BackendsConfig:
    """The effective backend configuration: defaults → config file → environment → flags."""
    return load_backends(checked_config(ctx), invocation(ctx).overrides)


def models_for(ctx: click.Context):
    """The configured models of this invocation (built lazily)."""
    from ..backends import Models

    return Models(open_workspace(ctx), load_config(ctx))


def config_path(ctx: click.Context) -> Path:
    """The config file of this invocation: ``--config``, else the workspace's config.yaml."""
    return invocation(ctx).config_file or open_root(ctx).root / CONFIG_FILE


def profile_for(ctx: click.Context) -> tuple[str, bool]:
    """The resolved profile (cpu or gpu) of this invocation (flag → environment → config file → auto),
    and whether it was ``auto``."""
    from ..config import read_config_file
    from ..profiles import requested, resolve

    name = requested(read_config_file(config_path(ctx)), invocation(ctx).profile)
    return resolve(name, load_config(ctx).generator.backend), name == "auto"


def stage_config_for(ctx: click.Context, cls: type, section: str, **flags: Any) -> Any:
    """A stage's config: defaults → the profile's values → the config file's ``section`` → the flags set.

    Under ``auto`` training keeps its own ``auto`` (by CUDA), whatever serves the generator.
    """
    profile, auto = profile_for(ctx)
    return stage_config(cls, config_path(ctx), section, flags, None if auto and section == "train" else profile)
