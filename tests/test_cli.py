import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import chat, write_jsonl

from unolearn.bench.ingest import write_synthetic_logs


def test_version_and_help(run_cli):
    from unolearn import __version__
    r = run_cli("--version", workspace=False)
    assert r.code == 0 and __version__ in r.out
    r = run_cli("--help", workspace=False)
    assert r.code == 0 and "ingest" in r.out and "logs" in r.out


def test_ingest_json_summary_and_dedupe(run_cli, tmp_path):
    p = write_jsonl(tmp_path / "logs.jsonl", [chat("q1", "a", "too long"), chat("q2", "a"),
                                              "{broken", chat("q3")])
    r = run_cli("ingest", "--json", str(p))
    assert r.code == 0, r.err
    assert r.json() == {"ingested": 3, "duplicates": 0, "rejected": 1}
    assert f"{p}:3: not valid JSON" in r.err and "Traceback" not in r.err
    r = run_cli("ingest", "--json", str(p))
    assert r.code == 0 and r.json() == {"ingested": 0, "duplicates": 3, "rejected": 1}
    stats = run_cli("logs", "stats", "--json").json()
    assert stats["logs"] == 3 and stats["with_feedback"] == 1 and stats["rejected"] == 1


def test_ingest_plain_output(run_cli, tmp_path):
    p = write_jsonl(tmp_path / "logs.jsonl", [chat("q1", "a")])
    r = run_cli("ingest", str(p))
    assert r.code == 0 and "ingested 1, duplicates 0, rejected 0" in r.out


def test_missing_file_is_one_line_exit_2_and_stores_nothing(run_cli, tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [chat("q1", "a")])
    r = run_cli("ingest", str(good), str(tmp_path / "nope.jsonl"))
    assert r.code == 2
    assert r.err.strip().splitlines() == [f"error: {tmp_path / 'nope.jsonl'}: no such file"]
    assert run_cli("logs", "stats", "--json").json()["logs"] == 0


def test_nothing_valid_exits_2(run_cli, tmp_path):
    p = write_jsonl(tmp_path / "bad.jsonl", ["nope", json.dumps({"messages": []})])
    r = run_cli("ingest", str(p))
    assert r.code == 2 and "error: no valid record" in r.err and "Traceback" not in r.err
    assert run_cli("logs", "stats", "--json").json()["rejected"] == 2


def test_unreadable_file_exit_2(run_cli, tmp_path):
    r = run_cli("ingest", str(tmp_path))
    assert r.code == 2 and "not a regular file" in r.err


def test_logs_show(run_cli, tmp_path):
    p = write_jsonl(tmp_path / "logs.jsonl", [chat("what is tort", "an answer", "cite it", actions=["copy"])])
    run_cli("ingest", str(p))
    from unolearn.store import Workspace
    r = run_cli("logs", "stats")
    assert "1 with feedback" in r.out and "copy" in r.out
    ws_dir = tmp_path / "ws"
    with Workspace.open(ws_dir) as w:
        log_id = next(w.iter_logs()).id
    shown = run_cli("logs", "show", log_id[:14], "--json").json()
    assert shown["id"] == log_id and shown["feedback"] == ["cite it"]
    assert "[user] what is tort" in run_cli("logs", "show", log_id).out
    r = run_cli("logs", "show", "log-v1-nothing")
    assert r.code == 2 and r.err.startswith("error: no log")


def test_kill_9_mid_ingest_then_rerun_completes(tmp_path, ws_dir):
    n = 60_000
    data = tmp_path / "big.jsonl"
    write_synthetic_logs(data, n)
    cmd = [sys.executable, "-m", "unolearn", "-d", str(ws_dir), "ingest", "--json", str(data)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = ws_dir / "unolearn.sqlite3"
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as c:
                    stored = c.execute("SELECT count(*) FROM logs").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if stored >= 2000:
                break
    assert proc.poll() is None, "ingest finished before it could be killed; raise n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        partial = c.execute("SELECT count(*) FROM logs").fetchone()[0]
    assert 0 < partial < n and partial % 1000 == 0  # whole batches only
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout) == {"ingested": n - partial, "duplicates": partial, "rejected": 0}


def test_bench_ingest_reports_figures(run_cli):
    r = run_cli("bench", "ingest", "--n", "300", "--json", workspace=False)
    assert r.code == 0, r.err
    out = r.json()
    assert out["n"] == 300 and out["ingested"] == 300
    assert out["records_per_s"] > 0 and 0 < out["peak_mb"] < 500


def test_bench_children_never_inherit_the_team_store(monkeypatch):
    """A benchmark's child works on a throwaway workspace: UNOLEARN_STORE (here a server that does not exist)
    is not passed on to it, unless the benchmark names the store the child must use."""
    from postgres import free_port

    from unolearn.bench import child_env
    from unolearn.bench.ingest import bench_ingest

    monkeypatch.setenv("UNOLEARN_STORE", f"postgresql://team@127.0.0.1:{free_port()}/team")
    out = bench_ingest(40)
    assert out["ingested"] == 40 and out["store"] == "sqlite"
    assert "UNOLEARN_STORE" not in child_env() and child_env("sqlite:///x")["UNOLEARN_STORE"] == "sqlite:///x"


def test_bench_ingest_on_a_postgresql_store_uses_a_scratch_database(request):
    import psycopg

    server = request.getfixturevalue("postgres_server")
    r = subprocess.run([sys.executable, "-m", "unolearn", "--store", server.url(), "bench", "ingest", "--n", "40",
                        "--json"], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "UNOLEARN_STORE"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["store"] == "postgresql" and json.loads(r.stdout)["ingested"] == 40
    with psycopg.connect(server.url()) as conn:
        scratch = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'unolearn_scratch%'").fetchone()
        assert scratch[0] == 0
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                            ).fetchone()[0] == 0  # the store's own database is never written


def test_benches_whose_workspace_stays_in_sqlite_refuse_a_store(run_cli, tmp_path):
    for args in (("bench", "train", "--pairs", "2"), ("bench", "demo", "--workspace", str(tmp_path / "demo"))):
        r = run_cli("--store", f"sqlite:///{tmp_path / 'team.sqlite3'}", *args, workspace=False)
        assert r.code == 2 and r.err == (f"error: bench {args[1]} keeps its workspace in the workspace's own SQLite "
                                         "file and cannot use --store or UNOLEARN_STORE: leave them out\n"), r.err
    assert not (tmp_path / "team.sqlite3").exists() and not (tmp_path / "demo").exists()


def test_unwritable_output_is_one_line_not_a_traceback(run_cli, tmp_path):
    r = run_cli("pairs", "export", "-o", str(tmp_path / "missing" / "pairs.jsonl"))
    assert r.code == 1 and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1 and r.err.startswith("error: ")


def test_closed_output_pipe_exits_0_and_other_os_errors_exit_1(monkeypatch, capsys):
    import pytest

    from unolearn import cli

    for error, code in ((BrokenPipeError(32, "Broken pipe"), 0), (PermissionError(13, "Permission denied"), 1)):
        monkeypatch.setattr(cli.cli, "main", lambda *a, error=error, **k: (_ for _ in ()).throw(error))
        with pytest.raises(SystemExit) as exit_:
            cli.main(["logs", "stats"])
        assert exit_.value.code == code
    assert capsys.readouterr().err.strip() == "error: [Errno 13] Permission denied"


def test_store_errors_are_one_line(run_cli, tmp_path):
    from postgres import free_port

    bad = run_cli("--store", "mysql://u@h/db", "logs", "stats")
    assert bad.code == 2 and bad.err.startswith("error: store URL 'mysql://u@h/db': expected sqlite:///PATH or ")
    url = f"postgresql://u:secret@127.0.0.1:{free_port()}/db"
    down = run_cli("--store", url, "logs", "stats")
    assert down.code == 3 and down.err.startswith("error: cannot reach the store postgresql://u:***@127.0.0.1:")
    in_query = run_cli("--store", f"postgresql://u@127.0.0.1:{free_port()}/db?password=secret", "logs", "stats")
    assert in_query.code == 3 and "/db?password=***: " in in_query.err
    for r in (bad, down, in_query):
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err and "secret" not in r.err
    no_driver = subprocess.run(  # psycopg hidden from the import system: as if the postgres extra were missing
        [sys.executable, "-c", "import sys; sys.modules['psycopg'] = None; from unolearn.cli import main; main()",
         "-d", str(tmp_path / "ws"), "--store", "postgresql://u@127.0.0.1/db", "logs", "stats"],
        capture_output=True, text=True)
    assert no_driver.returncode == 2, no_driver.stderr
    assert no_driver.stderr == "error: a postgresql:// store needs psycopg 3: pip install 'unolearn[postgres]'\n"
    assert not (tmp_path / "ws").exists()  # neither a wrong URL, nor a server out of reach, nor a missing driver
    # leaves a workspace folder behind


def test_the_store_comes_from_the_environment_too(tmp_path):
    p = write_jsonl(tmp_path / "logs.jsonl", [chat("q1", "a", "too long")])
    db = tmp_path / "shared" / "team.sqlite3"
    db.parent.mkdir()
    env = {**os.environ, "UNOLEARN_STORE": f"sqlite:///{db}"}
    r = subprocess.run([sys.executable, "-m", "unolearn", "-d", str(tmp_path / "ws"), "ingest", "--json", str(p)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["ingested"] == 1, r.stderr
    assert db.is_file() and not (tmp_path / "ws" / "unolearn.sqlite3").exists()


def test_the_cli_reference_is_current():
    """docs/cli.md is the commands' own --help; after changing a command, `python -m unolearn.clidoc --write`."""
    from unolearn.clidoc import REFERENCE, reference

    stale = "docs/cli.md is stale: python -m unolearn.clidoc --write"
    assert REFERENCE.read_text(encoding="utf-8") == reference(), stale


def test_answer_says_when_the_token_budget_cut_it(run_cli, ws_dir):
    """`unolearn answer` tells its user that the answer stopped at the budget, not at its end."""
    from fake_openai import FakeOpenAI

    fake = FakeOpenAI()
    with fake.running():
        ws_dir.mkdir(parents=True)
        (ws_dir / "config.yaml").write_text(json.dumps({"backends": {
            "generator": {"backend": "openai", "base_url": fake.url, "model": "fake-model"},
            "embedder": {"backend": "openai", "base_url": fake.url, "model": "fake-embed"}}}))
        whole = run_cli("answer", "how do I cook rice", "--system", "base")
        fake.finish_reason = "length"
        cut = run_cli("answer", "how do I boil rice", "--system", "base", "--max-tokens", "3")
    assert whole.code == 0 and whole.out.strip() == "echo: how do I cook rice" and "[cut" not in whole.err
    assert cut.code == 0 and cut.out.strip() == "echo: how do I boil rice", cut.err
    assert "[cut: the answer reached the token budget (3); --max-tokens raises it]" in cut.err
