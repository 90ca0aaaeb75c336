import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from unolearn.errors import NotFoundError, WorkspaceError
from unolearn.records import Log, Message, Rejected
from unolearn.store.migrations import MIGRATIONS
from unolearn.store import DB_NAME, Workspace


def log(q: str, *feedback: str) -> Log:
    msgs = [Message(role="user", content=q), Message(role="assistant", content="a")]
    msgs += [Message(role="user", content=f) for f in feedback]
    return Log.from_messages(msgs, source="t")


def test_open_migrates_and_uses_wal(ws, ws_dir):
    assert ws.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert ws.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (ws_dir / "artifacts").is_dir()
    Workspace.open(ws_dir).close()  # re-open: no migration re-applied


def test_guidance_migration_rebuilds_modules_and_plans_keeping_rows(ws_dir):
    ws_dir.mkdir(parents=True)
    conn = sqlite3.connect(ws_dir / DB_NAME, isolation_level=None)
    for fn in MIGRATIONS[:7]:  # a workspace of schema version 7, with a module, a judgement and a plan
        fn(conn)
    conn.execute("PRAGMA user_version = 7")
    conn.execute("INSERT INTO modules VALUES ('m1', 0, 'expert', '/p', 2, 'b', 'h', '{}', '{}', '[]', '[]', 1.0, 't')")
    conn.execute("INSERT INTO validation VALUES ('m1', 1, 'log1', 0, 5, 6, 0.5, 1.0, 1.0, 0)")
    conn.execute("INSERT INTO plans VALUES (0, 'uno', 'primary', 'm1', 1, 1.0, 'won')")
    conn.close()
    with Workspace.open(ws_dir) as w:
        assert w.conn.execute("SELECT id, kind FROM modules").fetchall() == [("m1", "expert")]
        assert w.conn.execute("SELECT module_id, outcome FROM validation").fetchall() == [("m1", 1.0)]
        assert w.conn.execute("SELECT system, path, module_id FROM plans").fetchall() == [("uno", "primary", "m1")]
        w.conn.execute("INSERT INTO plans (cluster, system, path, module_id, epoch, win_rate, reason) "
                       "VALUES (0, 'uno-guided', 'guide', NULL, NULL, NULL, 'r')")
        assert w.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        with pytest.raises(sqlite3.IntegrityError):  # validation still refers to the rebuilt modules table
            w.conn.execute("INSERT INTO validation VALUES ('nope', 1, 'log1', 0, 5, 6, 0.5, 1.0, 1.0, 0)")


def test_clustering_migration_makes_the_stored_clusters_version_1(ws_dir):
    ws_dir.mkdir(parents=True)
    conn = sqlite3.connect(ws_dir / DB_NAME, isolation_level=None)
    for fn in MIGRATIONS[:8]:  # schema version 8: clusters, a module, a plan, the cluster runs' records
        fn(conn)
    conn.execute("PRAGMA user_version = 8")
    conn.execute("INSERT INTO clusters VALUES (0, 3, x'00', 'e5', '2026-01-01')")
    conn.execute("INSERT INTO modules VALUES ('m1', 0, 'expert', '/p', 2, 'b', 'h', '{}', '{}', '[]', '[]', 1.0, 't')")
    conn.execute("INSERT INTO plans VALUES (0, 'uno', 'primary', 'm1', 1, 1.0, 'won')")
    conn.execute("INSERT INTO runs (stage, started_at, status, config) VALUES "
                 "('cluster', 't', 'ok', '{\"unseen_distance\": 0.4}')")
    conn.execute("INSERT INTO runs (stage, started_at, status, config, result) VALUES "
                 "('cluster-input', 't', 'ok', '{}', '{\"fingerprint\": \"fp\"}')")
    conn.close()
    with Workspace.open(ws_dir) as w:
        version = w.clustering()
        assert (version.id, version.embedder, version.unseen_distance, version.fingerprint) == (1, "e5", 0.4, "fp")
        assert [m["id"] for m in w.modules(0, "expert")] == ["m1"]
        assert w.plan_row(0, "uno")[:2] == ("primary", "m1")


def test_an_empty_workspace_has_no_clustering_after_the_migration(ws):
    assert ws.clustering() is None and ws.modules() == []


def test_a_workspace_of_schema_m009_upgrades_without_losing_a_row(ws_dir):
    fixture = Path(__file__).parent / "data" / "workspace-m009.sqlite3"  # see make_workspace_m009.py
    ws_dir.mkdir(parents=True)
    shutil.copy(fixture, ws_dir / DB_NAME)
    with closing(sqlite3.connect(fixture)) as conn:
        before = _table_rows(conn)
    assert all(before[t] for t in before if t not in ("sqlite_sequence", "migrations")), "a fixture table is empty"
    with Workspace.open(ws_dir) as w:  # the fixture's columns, in the upgraded tables
        after = {t: set(w.conn.execute(f"SELECT {', '.join(_columns(fixture, t))} FROM {t}")) for t in before}
        assert w.clustering().fingerprint == "fp"
        assert w.module("mod-1")["path"] == str(ws_dir / "artifacts/modules/mod-1")
    for table, rows in before.items():
        if table != "migrations":
            assert rows <= after[table], f"rows of {table} were lost"


def _table_rows(conn: sqlite3.Connection) -> dict[str, set[tuple]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: set(conn.execute(f"SELECT {', '.join(_columns_of(conn, t))} FROM {t}").fetchall()) for t in tables}


def _columns_of(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _columns(db: Path, table: str) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return _columns_of(conn, table)


def test_every_migration_is_recorded_by_name(ws):
    names = [r[0] for r in ws.conn.execute("SELECT name FROM migrations ORDER BY name")]
    assert names == [fn.__name__ for fn in MIGRATIONS] and names[0] == "m001_logs_rejected_runs"


def test_a_workspace_of_a_newer_unolearn_is_refused(ws_dir):
    with Workspace.open(ws_dir) as w:
        w.conn.execute("INSERT INTO migrations VALUES ('m999_from_the_future', 't')")
    with pytest.raises(WorkspaceError, match="m999_from_the_future, unknown to this unolearn"):
        Workspace.open(ws_dir)


def test_a_newer_workspace_from_before_the_migrations_table_is_refused(ws_dir):
    ws_dir.mkdir(parents=True)
    conn = sqlite3.connect(ws_dir / DB_NAME)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(WorkspaceError, match="newer"):
        Workspace.open(ws_dir)


def test_add_logs_dedupes_by_content(ws):
    a, b = log("q1", "too long"), log("q2")
    assert ws.add_logs([a, b]) == (2, 0)
    assert ws.add_logs([a, b, log("q3")]) == (1, 2)
    assert ws.get_log(a.id) == a and ws.get_log(a.id[:12]).query in ("q1", "q2", "q3")


def test_get_log_errors(ws):
    ws.add_logs([log("q1"), log("q2")])
    with pytest.raises(NotFoundError, match="no log"):
        ws.get_log("log-v1-zzz")
    with pytest.raises(NotFoundError, match="ambiguous"):
        ws.get_log("log-v1-")


def test_failed_transaction_writes_nothing(ws):
    ws.add_logs([log("q1")])
    with pytest.raises(sqlite3.Error):
        with ws.transaction() as c:
            c.execute("INSERT INTO logs VALUES ('x','s','en',0,'t','{}')")
            c.execute("INSERT INTO no_such_table VALUES (1)")
    assert ws.count("logs") == 1


def test_stats(ws):
    ws.add_logs([log("q1", "too long"), log("q2")],
                [Rejected(file="f", line=3, reason="bad", raw="{")])
    s = ws.log_stats()
    assert s["logs"] == 2 and s["with_feedback"] == 1 and s["without_feedback"] == 1
    assert s["by_source"] == {"t": 2} and s["by_lang"] == {"en": 2} and s["rejected"] == 1
    assert [x.query for x in ws.iter_logs(with_feedback=True)] == ["q1"]


def test_planned_adapters_lie_in_this_workspace_wherever_it_was_moved(tmp_path):
    from unolearn.records import Clustering

    with Workspace.open(tmp_path / "a") as w:
        w.replace_clustering(Clustering(id=0, embedder="e", created_at=""), [(0, 1, b"\0" * 4)], [])
        w.add_module({"id": "m1", "cluster": 0, "kind": "expert", "path": w.relative(w.artifacts / "modules" / "m1"),
                      "epochs": 2, "base_model": "b@h", "data_hash": "h", "config": "{}", "metrics": "{}",
                      "train_logs": "[]", "val_logs": "[]", "seconds": 1.0})
        w.replace_plans([(0, "uno", "primary", "m1", 2, 1.0, "won"), (0, "uno-single", "base", None, None, None, "r")])
    shutil.move(tmp_path / "a", tmp_path / "b")
    with Workspace.open(tmp_path / "b") as w:
        assert w.planned_adapters() == [("m1", 2, str(tmp_path / "b" / "artifacts" / "modules" / "m1"))]
        w.replace_clustering(Clustering(id=0, embedder="e", created_at=""), [(0, 1, b"\0" * 4)], [])
        assert w.planned_adapters() == [] and w.modules() == []  # a new clustering: no plan, no module of it yet
