import pytest

from unolearn.config import ChatConfig, load_backends
from unolearn.errors import ConfigError


def test_defaults_are_embedded_and_cached(tmp_path):
    cfg = load_backends(tmp_path / "absent.yaml", env={})
    assert cfg.generator.backend == "embedded" and cfg.embedder.backend == "embedded" and cfg.cache


def test_file_then_env_then_flags(tmp_path):
    f = tmp_path / "config.yaml"
    f.write_text("backends:\n  generator: {backend: openai, base_url: 'http://a/v1', model: m1, concurrency: 32}\n"
                 "  judge: {model: judge-m}\n  cache: false\n")
    cfg = load_backends(f, env={})
    assert (cfg.generator.base_url, cfg.generator.model, cfg.generator.concurrency) == ("http://a/v1", "m1", 32)
    assert cfg.judge.model == "judge-m" and cfg.judge.base_url == "http://a/v1" and not cfg.cache
    cfg = load_backends(f, env={"UNOLEARN_MODEL": "m2"})
    assert cfg.generator.model == "m2"
    cfg = load_backends(f, {"generator": {"model": "m3", "base_url": None}}, env={"UNOLEARN_MODEL": "m2"})
    assert cfg.generator.model == "m3" and cfg.generator.base_url == "http://a/v1"


def test_env_base_url_selects_openai(tmp_path):
    cfg = load_backends(None, env={"UNOLEARN_BASE_URL": "http://x/v1", "UNOLEARN_MODEL": "q"})
    assert cfg.generator.backend == "openai"


@pytest.mark.parametrize("text, match", [
    ("backends:\n  generator: {backend: magic}\n", "not one of"),
    ("backends:\n  generator: {backend: openai}\n", "needs base_url and model"),
    ("backends:\n  generator: {temperature: 3}\n", "unknown key 'temperature'"),
    ("backends:\n  embedder: {batch_size: 0}\n", "batch_size"),
    ("backends: [1]\n", "must be a mapping"),
    ("backends:\n  nonsense: 1\n", "unknown key 'nonsense'"),
    ("- a\n", "mapping at the top level"),
    ("backends: {generator: [\n", "cannot read config"),
])
def test_bad_config_is_a_one_line_config_error(tmp_path, text, match):
    f = tmp_path / "config.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_backends(f, env={})
    assert "\n" not in str(e.value)


def test_chat_config_validation():
    with pytest.raises(ConfigError):
        ChatConfig(concurrency=0)
    with pytest.raises(ConfigError, match="parallel"):
        ChatConfig(parallel=0)
    assert ChatConfig().parallel == 8


def test_cli_config_show_masks_keys(run_cli, ws_dir):
    ws_dir.mkdir(parents=True)
    (ws_dir / "config.yaml").write_text(
        "backends:\n  generator: {backend: openai, base_url: 'http://a/v1', model: m, api_key: secret}\n")
    r = run_cli("config", "show")
    assert r.code == 0, r.err
    assert r.json()["generator"]["api_key"] == "***" and "secret" not in r.out
    r = run_cli("--model", "other", "config", "show")
    assert r.json()["generator"]["model"] == "other"
    (ws_dir / "config.yaml").write_text("backends:\n  generator: {backend: magic}\n")
    r = run_cli("config", "show")
    assert r.code == 2 and r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize("text, says", [
    ("bogus: {a: 1}\n", "unknown section 'bogus'"),
    ("distill: {n_revisions: many}\n", "distill: n_revisions must be int, got 'many'"),
    ("distill: {n_revision: 3}\n", "distill: unknown key 'n_revision'"),
    ("cluster: {threshold: -1}\n", "cluster: cluster.threshold must be > 0"),
    ("redact: {threshold: 2}\n", "redact: redact.threshold must be between 0 and 1"),
    ("serve: {port: 99999}\n", "serve: serve.port must be between 0 and 65535"),
    ("retention: {days: 0}\n", "retention: retention.days must be"),
    ("profile: fast\n", "profile must be auto, cpu or gpu"),
])
def test_every_section_is_checked_by_every_command(run_cli, ws_dir, text, says):
    """A wrong value in a section the command does not read was silently ignored before."""
    ws_dir.mkdir(parents=True, exist_ok=True)
    (ws_dir / "config.yaml").write_text(text)
    for args in (("config", "show"), ("logs", "stats")):
        r = run_cli(*args)
        assert r.code == 2 and says in r.err and str(ws_dir / "config.yaml") in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1
