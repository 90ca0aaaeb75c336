"""One profile sets the costly settings of every stage: defaults → profile → config file → flags."""

import pytest

from unolearn.bench.quality import QualityConfig
from unolearn.config import stage_config
from unolearn.distill import DistillConfig
from unolearn.errors import ConfigError
from unolearn.profiles import PROFILES, overlay, requested, resolve
from unolearn.rulebook import RulebookConfig
from unolearn.selection import SelectConfig
from unolearn.simulate import SimulateConfig
from unolearn.train import TrainConfig


def test_cpu_profile_lowers_the_cost_of_every_stage():
    cpu = {cls: stage_config(cls, None, section, {}, "cpu") for cls, section in (
        (DistillConfig, "distill"), (SelectConfig, "select"), (QualityConfig, "bench_quality"),
        (SimulateConfig, "simulate"), (TrainConfig, "train"))}
    gpu = {cls: stage_config(cls, None, section, {}, "gpu") for cls, section in (
        (DistillConfig, "distill"), (SelectConfig, "select"), (QualityConfig, "bench_quality"),
        (SimulateConfig, "simulate"), (TrainConfig, "train"))}
    assert (cpu[DistillConfig].n_revisions, cpu[DistillConfig].answer_max_tokens) == (1, 256)
    assert (gpu[DistillConfig].n_revisions, gpu[DistillConfig].answer_max_tokens) == (3, 1024)
    assert (cpu[SelectConfig].judge_samples, cpu[SelectConfig].answer_max_tokens) == (2, 256)
    assert gpu[SelectConfig].judge_samples == 3
    assert cpu[QualityConfig].max_tokens == cpu[SimulateConfig].max_tokens == 256
    assert cpu[SimulateConfig].rounds == 1 and gpu[SimulateConfig].rounds == 3
    assert cpu[TrainConfig].profile == "cpu" and gpu[TrainConfig].profile == "gpu"
    assert not stage_config(RulebookConfig, None, "rulebook", {}, "cpu").contradictions
    assert stage_config(RulebookConfig, None, "rulebook", {}, "gpu").contradictions
    # one budget per profile for every answer, whichever stage writes it
    budgets = {section: next(v for k, v in values.items() if k in ("answer_max_tokens", "max_tokens"))
               for section, values in PROFILES["cpu"].items() if section not in ("train", "rulebook")}
    assert set(budgets.values()) == {256}


def test_the_config_file_and_flags_override_the_profile(tmp_path):
    f = tmp_path / "config.yaml"
    f.write_text("distill:\n  answer_max_tokens: 400\n")
    cfg = stage_config(DistillConfig, f, "distill", {}, "cpu")
    assert (cfg.answer_max_tokens, cfg.n_revisions) == (400, 1)
    assert stage_config(DistillConfig, f, "distill", {"answer_max_tokens": 99}, "cpu").answer_max_tokens == 99
    assert stage_config(DistillConfig, f, "distill", {}, None).n_revisions == 3  # no profile: the defaults


def test_auto_follows_where_the_generator_runs(monkeypatch):
    assert resolve("auto", "embedded") == "cpu" and resolve("auto", "openai") == "gpu"
    assert resolve("gpu", "embedded") == "gpu" and resolve("cpu", "openai") == "cpu"
    monkeypatch.delenv("UNOLEARN_PROFILE", raising=False)
    assert requested({}, None) == "auto" and requested({"profile": "gpu"}, None) == "gpu"
    monkeypatch.setenv("UNOLEARN_PROFILE", "cpu")
    assert requested({"profile": "gpu"}, None) == "cpu" and requested({}, "gpu") == "gpu"


@pytest.mark.parametrize("bad", ["tpu", 5])
def test_unknown_profiles_are_one_line_errors(bad, monkeypatch):
    monkeypatch.delenv("UNOLEARN_PROFILE", raising=False)
    with pytest.raises(ConfigError, match="profile"):
        requested({"profile": bad}, None)
    with pytest.raises(ConfigError, match="profile"):
        overlay("auto", "distill")


def test_a_section_that_is_not_a_mapping_is_a_config_error(tmp_path):
    f = tmp_path / "config.yaml"
    f.write_text("distill: 5\n")
    with pytest.raises(ConfigError, match="'distill' must be a mapping"):
        stage_config(DistillConfig, f, "distill", {}, "cpu")


def test_the_demo_runs_what_simulate_run_and_bench_quality_run():
    from unolearn.demo import stages_for
    from unolearn.pipeline import run_configs

    build = lambda cls, section: stage_config(cls, None, section, {}, "cpu")  # noqa: E731
    demo = stages_for(build)
    assert demo.run == run_configs(build) and demo.quality == build(QualityConfig, "bench_quality")
    assert demo.simulate == build(SimulateConfig, "simulate")
    assert demo.run.train.critics == "all" and demo.run.cluster.threshold is None  # no demo-only overrides


@pytest.mark.parametrize("text, match", [
    ("distill: {n_revisions: abc}\n", "distill: n_revisions must be int, got 'abc'"),
    ("distill: {temperature: hot}\n", "distill: temperature must be float, got 'hot'"),
    ("distill: {n_revisions: true}\n", "distill: n_revisions must be int, got True"),
])
def test_a_value_of_the_wrong_type_is_a_one_line_config_error(tmp_path, text, match):
    f = tmp_path / "config.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        stage_config(DistillConfig, f, "distill", {}, "cpu")


def test_an_int_is_a_valid_float():
    assert stage_config(DistillConfig, None, "distill", {"temperature": 1}, "cpu").temperature == 1


def test_one_table_sets_training_and_writes_the_help_that_names_its_values(monkeypatch):
    from unolearn.cli.common import field_help
    from unolearn.train import TrainConfig

    assert TrainConfig(profile="cpu").resolved().epochs == PROFILES["cpu"]["train"]["epochs"] == 2
    assert TrainConfig(profile="gpu").resolved().lora_r == PROFILES["gpu"]["train"]["lora_r"] == 64
    assert "(profile gpu: 8, cpu: 2)" in field_help(TrainConfig, "epochs")
    assert "(profile gpu: off, cpu: on)" in field_help(TrainConfig, "gradient_checkpointing")
    monkeypatch.setitem(PROFILES["cpu"]["train"], "epochs", 3)  # one edit of the table changes what runs
    assert TrainConfig(profile="cpu").resolved().epochs == 3
