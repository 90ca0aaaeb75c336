"""The command-line reference (docs/cli.md), generated from the commands' own ``--help``.

Why generated: the help texts are written once, next to the options they describe; the reference is their
copy, and a test fails when it drifts (``python -m unolearn.clidoc --write`` brings it up to date).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
HEADER = ("# Command-line reference\n\nGenerated from `unolearn --help` by `python -m unolearn.clidoc --write`; "
          "a test keeps it current.\n")


def _commands(group: click.Group, ctx: click.Context, prefix: str) -> Iterator[tuple[str, click.Context]]:
    """``(full name, context)`` of ``group`` and every command under it, depth first, by name."""
    yield prefix, ctx
    for name in sorted(group.list_commands(ctx)):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = click.Context(cmd, info_name=name, parent=ctx, max_content_width=100, terminal_width=100)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, sub, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", sub


def reference() -> str:
    """The reference text: one section per command, its ``--help`` verbatim."""
    from .cli import cli

    root = click.Context(cli, info_name="unolearn", max_content_width=100, terminal_width=100)
    parts = [HEADER]
    for name, ctx in _commands(cli, root, "unolearn"):
        parts.append(f"\n## `{name}`\n\n```\n{ctx.command.get_help(ctx).rstrip()}\n```\n")
    return "".join(parts)


def main(argv: list[str]) -> int:
    """``--write``: write docs/cli.md; else print the reference."""
    text = reference()
    if "--write" in argv:
        REFERENCE.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
