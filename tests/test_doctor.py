"""`unolearn doctor`: the real checks, the JSON contract, and a non-zero exit for a broken model."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("llama_cpp")

from unolearn.backends import llamacpp  # noqa: E402
from unolearn.cli import main  # noqa: E402

KEYS = {"ok", "checks", "python", "packages", "cpu", "model", "generation", "embedder", "workspace", "config"}


def doctor(capsys, *args: str) -> tuple[int, dict]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, json.loads(capsys.readouterr().out)


def test_doctor_reports_every_documented_key_and_exits_0(tmp_path, capsys):
    code, report = doctor(capsys, "-d", str(tmp_path / "ws"), "doctor", "--json")
    assert code == 0, report["checks"]
    assert KEYS <= set(report)
    assert {c["name"] for c in report["checks"]} >= {"python", "packages", "cpu", "model", "generation",
                                                     "embedder", "workspace"}
    assert all(set(c) == {"name", "status", "detail", "fix"} for c in report["checks"])
    assert report["model"]["sha256_ok"] is True
    assert report["generation"]["tokens"] > 0 and report["generation"]["tokens_per_s"] > 0
    assert report["generation"]["use_extra_bufts"] is False
    assert report["embedder"]["dim"] > 0
    assert set(report["cpu"]) >= {"model", "cores", "avx2", "avx512", "amx"}
    assert report["packages"]["llama-cpp-python"] and report["workspace"]["exists"] is False
    assert not (tmp_path / "ws").exists()  # doctor creates no workspace


def test_missing_model_package_fails_with_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    missing = dataclasses.replace(llamacpp.DEFAULT_MODEL, parts=(("unolearn-no-such-model-part", "part.bin"),))
    monkeypatch.setattr(llamacpp, "DEFAULT_MODEL", missing)
    code, report = doctor(capsys, "-d", str(tmp_path / "ws"), "doctor", "--json", "--no-generate")
    assert code == 1 and report["ok"] is False
    [model] = [c for c in report["checks"] if c["name"] == "model"]
    assert model["status"] == "fail" and "unolearn-no-such-model-part" in model["detail"]
    assert "pip install" in model["fix"] and "\n" not in model["detail"]
    assert "generation" not in report  # nothing to generate with


def test_sha256_mismatch_fails_with_exit_1(tmp_path, capsys, monkeypatch):
    # A single installed part checked against another digest: what a changed upload looks like.
    one_part = dataclasses.replace(llamacpp.DEFAULT_MODEL, sha256="0" * 64, parts=llamacpp.DEFAULT_MODEL.parts[-1:])
    monkeypatch.setattr(llamacpp, "DEFAULT_MODEL", one_part)
    code, report = doctor(capsys, "-d", str(tmp_path / "ws"), "doctor", "--json")
    assert code == 1 and report["model"]["sha256_ok"] is False
    [model] = [c for c in report["checks"] if c["name"] == "model"]
    assert model["status"] == "fail" and "sha256" in model["detail"]


def test_unreachable_server_is_a_failed_check(tmp_path, capsys):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "config.yaml").write_text(
        "backends:\n  generator: {backend: openai, base_url: 'http://127.0.0.1:9/v1', model: m}\n")
    code, report = doctor(capsys, "-d", str(tmp_path / "ws"), "doctor", "--json", "--no-generate")
    assert code == 1
    [gen] = [c for c in report["checks"] if c["name"] == "generator"]
    assert gen["status"] == "fail" and "not reachable" in gen["detail"]


def test_doctor_says_which_model_judges(tmp_path, capsys, monkeypatch):
    code, report = doctor(capsys, "-d", str(tmp_path / "ws"), "doctor", "--json", "--no-generate")
    [judge] = [c for c in report["checks"] if c["name"] == "judge"]
    assert code == 0 and judge["status"] == "ok" and "generator's model" in judge["detail"]
    # the packaged 1.5B named as the judge, its packages missing: a failed check that names the extra
    missing = dataclasses.replace(llamacpp.QUALITY_MODEL, parts=(("unolearn-no-such-quality-part", "part.bin"),))
    monkeypatch.setattr(llamacpp, "QUALITY_MODEL", missing)
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "config.yaml").write_text("backends:\n  judge: {model: quality}\n")
    code, report = doctor(capsys, "-d", str(tmp_path / "ws"), "doctor", "--json", "--no-generate")
    [judge] = [c for c in report["checks"] if c["name"] == "judge"]
    assert code == 1 and judge["status"] == "fail" and "unolearn-no-such-quality-part" in judge["detail"]
    assert "unolearn[quality]" in judge["fix"]
