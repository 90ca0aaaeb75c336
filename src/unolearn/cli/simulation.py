"""Simulated users: simulate, preferences, demo."""

from __future__ import annotations

from pathlib import Path

import click

from ..funnel import funnel_lines
from ..simulate import SimulateConfig
from ..store import write_jsonl_atomic
from .bench import quality_table
from .common import (
    PREFERENCES_HELP,
    PreferencesSpec,
    PromptFiles,
    echo_json,
    field_help,
    flat,
    json_option,
    models_for,
    open_workspace,
    stage_config_for,
)


@click.command()
@click.argument("prompts", nargs=-1, required=True, type=PromptFiles())
@click.option("--preferences", type=PreferencesSpec(), help=PREFERENCES_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulated users.")
@click.option("--rounds", type=click.IntRange(0, 10), help=field_help(SimulateConfig, "rounds"))
@click.option("--max-tokens", type=click.IntRange(min=1), help=field_help(SimulateConfig, "max_tokens"))
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
    from ..simulate import SimulateConfig, load_preferences, load_prompt_records, summarize
    from ..simulate import simulate as run_sim

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


@click.command("preferences")
@click.argument("spec", type=PreferencesSpec(), required=False)
def preferences_cmd(spec: Path | str | None) -> None:
    """Print a preference file as the simulator reads it (YAML): SPEC is a file, random:SEED, or nothing for
    the packaged default. Review a random file, or save it to edit: `unolearn preferences random:7 > p.yaml`."""
    import yaml

    from ..simulate import load_preferences

    prefs = load_preferences(spec).model_dump(mode="json", exclude_none=True)
    click.echo(yaml.safe_dump(prefs, allow_unicode=True, sort_keys=False, width=120), nl=False)


@click.command()
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
    from ..demo import DemoConfig, run, stages_for

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
