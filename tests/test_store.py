"""The store on both backends (the ``ws`` fixture is each of them in turn); the migration tests of SQLite
workspaces written by earlier unolearns are SQLite's alone."""

import re
import shutil
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest
from conftest import each_store  # noqa: F401
from doubles import as_plans
from postgres import free_port

from unolearn.errors import NotFoundError, WorkspaceError
from unolearn.records import Log, Message, Rejected
from unolearn.store import DB_NAME, Workspace
from unolearn.store.dialect import SQLiteConnection, database_errors
from unolearn.store.migrations import MIGRATIONS


@pytest.fixture
def store_url(each_store):
    """Every test of this module that opens a workspace runs on SQLite, then on PostgreSQL."""
    return each_store


def log(q: str, *feedback: str) -> Log:
    msgs = [Message(role="user", content=q), Message(role="assistant", content="a")]
    msgs += [Message(role="user", content=f) for f in feedback]
    return Log.from_messages(msgs, source="t")


def test_open_migrates_and_uses_wal(ws, ws_dir):
    if ws.dialect.name == "sqlite":
        assert ws.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert ws.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    else:
        assert not (ws_dir / DB_NAME).exists()  # every table in the PostgreSQL store
    assert ws.schema_version() == len(MIGRATIONS)
    assert (ws_dir / "artifacts").is_dir()
    Workspace.open(ws_dir, ws.store).close()  # re-open: no migration re-applied


def test_guidance_migration_rebuilds_modules_and_plans_keeping_rows(ws_dir):
    ws_dir.mkdir(parents=True)
    conn = SQLiteConnection(ws_dir / DB_NAME)
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
    conn = SQLiteConnection(ws_dir / DB_NAME)
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
        assert (w.plan(0, "uno").path, w.plan(0, "uno").module_id) == ("primary", "m1")


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
        stored = w.conn.execute("SELECT cluster, system, path, module_id, epoch FROM plans ORDER BY 1, 2").fetchall()
        assert stored and [tuple(p) for p in w.snapshot()["plans"]] == stored  # m011: its plans are served
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


def test_a_workspace_of_a_newer_unolearn_is_refused(ws_dir, store_url):
    with Workspace.open(ws_dir, store_url) as w:
        w.conn.execute("INSERT INTO migrations VALUES ('m999_from_the_future', 't')")
    with pytest.raises(WorkspaceError, match="m999_from_the_future, unknown to this unolearn"):
        Workspace.open(ws_dir, store_url)


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
    with pytest.raises(database_errors()):
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


def test_planned_adapters_lie_in_this_workspace_wherever_it_was_moved(tmp_path, store_url):
    from doubles import HashEmbedder

    from unolearn.records import Clustering
    from unolearn.snapshot import PlanSnapshot

    embedder = HashEmbedder(dim=1)
    embedder.model_id = "e"

    with Workspace.open(tmp_path / "a", store_url) as w:
        w.replace_clustering(Clustering(id=0, embedder="e", created_at=""), [(0, 1, b"\0" * 4)], [])
        w.add_module({"id": "m1", "cluster": 0, "kind": "expert", "path": w.relative(w.artifacts / "modules" / "m1"),
                      "epochs": 2, "base_model": "b@h", "data_hash": "h", "config": "{}", "metrics": "{}",
                      "train_logs": "[]", "val_logs": "[]", "seconds": 1.0}, w.clustering_id())
        w.replace_plans(as_plans([(0, "uno", "primary", "m1", 2, 1.0, "won"),
                                  (0, "uno-single", "base", None, None, None, "r")]), w.clustering_id())
    shutil.move(tmp_path / "a", tmp_path / "b")
    with Workspace.open(tmp_path / "b", store_url) as w:
        served = [("m1", 2, str(tmp_path / "b" / "artifacts" / "modules" / "m1"))]
        assert PlanSnapshot.load(w, embedder).adapters == served
        w.replace_clustering(Clustering(id=0, embedder="e", created_at=""), [(0, 1, b"\0" * 4)], [])
        assert w.plan(0, "uno") is None and w.modules() == []  # a new clustering: no plan, no module of it yet
        assert PlanSnapshot.load(w, embedder).adapters == served  # the published plan serves until `select`


def test_processes_opening_a_new_store_at_once_migrate_it_once(tmp_path, store_url):
    opened, errors = [], []

    def open_one(i: int) -> None:
        try:
            with Workspace.open(tmp_path / "shared" if store_url is None else tmp_path / f"ws{i}", store_url) as w:
                opened.append(w.schema_version())
        except Exception as e:  # noqa: BLE001 — collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and opened == [len(MIGRATIONS)] * 4


def test_concurrent_writers_lose_no_update(ws):
    """Read-then-write transactions on separate connections (as separate processes): every update kept.

    Between its read and its write each writer waits up to 50 ms for another to reach the same point (a
    barrier): were the read not behind the write lock, two writers would read the same size there, and
    one update would be lost every time. With the lock, none ever has company.
    """
    from unolearn.records import Clustering

    ws.replace_clustering(Clustering(id=0, embedder="e", created_at=""), [(0, 0, b"\0" * 4)], [])
    ws.add_logs([log(f"q{i}") for i in range(24)])
    ids = [lg.id for lg in ws.iter_logs()]
    between, most, barrier = [0], [0], threading.Condition()

    def grow(size: int, centroid: bytes) -> tuple[int, bytes]:
        with barrier:
            between[0] += 1
            most[0] = max(most[0], between[0])
            barrier.notify_all()
            barrier.wait_for(lambda: between[0] > 1, timeout=0.05)
            between[0] -= 1
        return size + 1, centroid

    def add(chunk: list[str]) -> None:
        with Workspace.open(ws.root, ws.store) as other:
            for log_id in chunk:
                other.add_member(log_id, 0, grow)

    threads = [threading.Thread(target=add, args=(ids[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ws.cluster_rows()[0][1] == 24 and len(ws.cluster_members(0)) == 24 and most == [1]


def test_text_keys_sort_and_match_prefixes_bytewise(ws):
    """Keys sort, and id prefixes match as ranges, as SQLite's BINARY collation has them: PostgreSQL's text
    columns are COLLATE "C", whatever the database's own collation."""
    logs = [log(q) for q in ("Zeta", "alpha", "_x", "Ω")]
    ws.add_logs(logs)
    assert [lg.id for lg in ws.iter_logs()] == sorted(lg.id for lg in logs)
    if ws.dialect.name == "postgresql":
        rows = ws.conn.execute("SELECT table_name, column_name, collation_name FROM information_schema.columns "
                               "WHERE table_schema = 'public' AND data_type = 'text'").fetchall()
        assert len(rows) > 50 and {r[2] for r in rows} == {"C"}, rows


def test_a_malformed_store_url_is_a_config_error(tmp_path):
    from unolearn.errors import ConfigError

    for bad in ("mysql://u@h/db", "sqlite://relative", "postgresql://u@h", "postgresql://u@h:99999/db",
                "postgresql://u@h/a/b", "postgresql:/db", "nonsense"):
        with pytest.raises(ConfigError, match="store URL"):
            Workspace.open(tmp_path / "ws", bad)
    assert not (tmp_path / "ws").exists()


def test_a_sqlite_store_url_names_the_file(tmp_path):
    with Workspace.open(tmp_path / "ws", f"sqlite:///{tmp_path}/elsewhere.sqlite3") as w:
        w.add_logs([log("q")])
    assert (tmp_path / "elsewhere.sqlite3").is_file() and not (tmp_path / "ws" / DB_NAME).exists()
    with Workspace.open(tmp_path / "other", f"sqlite:///{tmp_path}/elsewhere.sqlite3") as w:
        assert w.count("logs") == 1


def test_an_unreachable_server_is_a_workspace_error(tmp_path):
    from postgres import free_port

    with pytest.raises(WorkspaceError, match=r"cannot reach the store postgresql://u:\*\*\*@127.0.0.1"):
        Workspace.open(tmp_path / "ws", f"postgresql://u:secret@127.0.0.1:{free_port()}/db")


def test_unix_socket_urls_are_stores(request, tmp_path):
    """libpq's Unix-socket forms (no host: the default socket; a socket folder as host) name a store."""
    from unolearn.store.admin import scratch_store
    from unolearn.store.dialect import check_url

    for url in ("postgresql:///db", "postgresql://u@/db?host=/run/postgresql", "postgresql://%2Frun%2Fpostgresql/db"):
        assert check_url(url) == url
    server = request.getfixturevalue("postgres_server")
    socket_url = f"postgresql://unolearn@/postgres?host={server.dir}&port={server.port}"
    with scratch_store(socket_url, prefix="unolearn_test") as url:
        assert url.startswith("postgresql://unolearn@/unolearn_test_")
        assert url.endswith(f"?host={server.dir}&port={server.port}")
        with Workspace.open(tmp_path / "ws", url) as w:
            w.add_logs([log("over a socket")])
            assert w.count("logs") == 1 and w.conn.execute("SELECT inet_server_addr()").fetchone()[0] is None


def test_passwords_are_hidden_wherever_the_url_holds_them():
    from unolearn.store.dialect import redacted

    assert redacted("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert redacted("postgresql://u@h/db?sslmode=require&password=secret") == \
        "postgresql://u@h/db?sslmode=require&password=***"
    assert redacted("postgresql:///db?PASSWORD=secret&sslpassword=key") == "postgresql:///db?PASSWORD=***&sslpassword=***"
    assert redacted("postgresql://u@h/db?passwordless=1") == "postgresql://u@h/db?passwordless=1"


def test_a_failed_connection_reports_the_reason_not_psycopg_s_header():
    from unolearn.store.dialect import _first_line

    multiple = Exception("Multiple connection attempts failed. All failures were:\n"
                         "- host: 'localhost', port: '1', hostaddr: '::1': connection failed: connection to server "
                         "at \"::1\", port 1 failed: Connection refused\n\tIs the server running on that host?\n"
                         "- host: 'localhost', port: '1', hostaddr: '127.0.0.1': connection failed: connection to "
                         "server at \"127.0.0.1\", port 1 failed: Connection refused\n\tIs the server running?")
    assert _first_line(multiple) == ("host: 'localhost', port: '1', hostaddr: '127.0.0.1': connection failed: "
                                     "connection to server at \"127.0.0.1\", port 1 failed: Connection refused")
    assert _first_line(Exception("connection failed: FATAL: no such database\n\tHINT")) == \
        "connection failed: FATAL: no such database"
    assert _first_line(ValueError("")) == "ValueError"


def test_question_marks_and_type_names_inside_quotes_are_left_as_written(ws):
    """The store's ``?`` placeholders become psycopg's ``%s`` and SQLite's type names PostgreSQL's, but not
    inside a quoted literal or identifier."""
    from unolearn.store.dialect import POSTGRES, _pyformat

    assert _pyformat("SELECT 'a?%', \"b?\" FROM t WHERE x = ? AND y = 'it''s ?'") == \
        "SELECT 'a?%%', \"b?\" FROM t WHERE x = %s AND y = 'it''s ?'"
    assert POSTGRES.ddl("CREATE TABLE t (a TEXT DEFAULT 'TEXT, REAL', b REAL)") == \
        "CREATE TABLE t (a TEXT COLLATE \"C\" DEFAULT 'TEXT, REAL', b DOUBLE PRECISION)"
    assert ws.conn.execute("SELECT '?%', ?, 'it''s ?'", (7,)).fetchone() == ("?%", 7, "it's ?")


def test_a_writer_waits_for_the_lock_a_bounded_time(ws):
    """A write transaction that cannot get the store's write lock in time is a StoreBusyError (SQLite's busy
    timeout, PostgreSQL's lock_timeout), not a wait for ever; on PostgreSQL the idempotent writes take no lock."""
    from unolearn.errors import StoreBusyError

    with Workspace.open(ws.root, ws.store) as other, ws.transaction():
        other.conn.set_lock_timeout(0.3)
        with pytest.raises(StoreBusyError, match="busy: another writer held its write lock for 0.3 s|busy: another "
                                                 "writer held it for 0.3 s"):
            with other.transaction():
                pass
        if ws.dialect.name == "postgresql":
            other.cache_put("k", "m", "r")  # no write lock: not blocked
            other.add_logs([log("while locked")])
            with other.transaction(lock=False) as c:
                settings = [c.execute(f"SHOW {name}").fetchone()[0]
                            for name in ("lock_timeout", "idle_in_transaction_session_timeout")]
            assert settings == ["300ms", "1min"]
    assert ws.cache_get("k") == ("r" if ws.dialect.name == "postgresql" else None)


def test_a_broken_postgresql_connection_is_replaced(request, tmp_path):
    """After the server ends a session (a restart, pg_terminate_backend), a read runs on a new connection at
    once; a write transaction that meets the break raises an error its caller may retry, and the next one
    runs on a new connection."""
    from conftest import store_of

    def cut(w: Workspace) -> None:
        with Workspace.open(tmp_path / "ws", w.store) as admin:
            admin.conn.execute("SELECT pg_terminate_backend(?)", (w.conn.raw.info.backend_pid,))

    with store_of(request, "postgresql") as url, Workspace.open(tmp_path / "ws", url) as w:
        params = w.conn.raw.info.get_parameters()
        assert params["keepalives"] == "1" and params["keepalives_idle"] == "60"
        cut(w)
        assert w.count("logs") == 0
        cut(w)
        with pytest.raises(database_errors()) as broken:
            w.add_logs([log("meets the break")])
        assert w.conn.transient(broken.value)
        w.add_logs([log("after the break")])
        assert w.count("logs") == 1


def test_logs_stats_count_actions_of_logs_holding_nul(ws):
    """A log may hold U+0000 (stored as the JSON escape); PostgreSQL's jsonb refuses it, so the stats read
    the records as json."""
    from unolearn.records import Action

    msgs = [Message(role="user", content="q\u0000 with a NUL"), Message(role="assistant", content="a\u0000"),
            Message(role="user", content="fix\u0000 it")]
    nul = Log.from_messages(msgs, source="t", actions=(Action(kind="dislike"),))
    ws.add_logs([nul, log("q2")])
    assert ws.get_log(nul.id).query == "q\u0000 with a NUL"
    assert ws.log_stats()["actions"] == {"dislike": 1}


def test_a_migrated_store_opens_without_the_create_privilege(request, tmp_path):
    """Opening a store that has every migration only reads: a role that may write the tables but not create
    any (PostgreSQL 15's default on the public schema) opens it and writes."""
    import secrets

    from conftest import store_of

    from unolearn.store.admin import with_database

    role = f"writer_{secrets.token_hex(3)}"
    with store_of(request, "postgresql") as url, Workspace.open(tmp_path / "ws", url) as w:
        database = url.rsplit("/", 1)[1]
        for statement in (f"CREATE ROLE {role} LOGIN", f'GRANT CONNECT ON DATABASE "{database}" TO {role}',
                          "REVOKE CREATE ON SCHEMA public FROM PUBLIC", f"GRANT USAGE ON SCHEMA public TO {role}",
                          f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
                          f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"):
            w.conn.execute(statement)
        try:
            as_role = with_database(url.replace("unolearn@", f"{role}@", 1), database)
            with Workspace.open(tmp_path / "ws", as_role) as limited:
                limited.add_logs([log("by a role without CREATE")])
                assert limited.count("logs") == 1 and limited.schema_version() == len(MIGRATIONS)
        finally:
            w.conn.execute(f"DROP OWNED BY {role}")
            w.conn.execute(f"DROP ROLE {role}")


def test_scratch_databases_are_dated_swept_after_a_day_and_never_hide_the_error(request):
    """A scratch database is named with its UTC creation time; one a killed run left over a day ago is dropped
    by the next scratch store, a recent one (another run's) is kept; a drop that fails on the way out of an
    error does not replace that error."""
    from unolearn.store.admin import scratch_store
    from unolearn.store.dialect import PostgresConnection

    server = request.getfixturevalue("postgres_server")
    admin = PostgresConnection(server.url())
    try:
        old, recent = "unolearn_sweep_20000101000000_deadbeef", "unolearn_sweep_29990101000000_cafef00d"
        for name in (old, recent):
            admin.execute(f'CREATE DATABASE "{name}"')
        with pytest.raises(RuntimeError, match="the block failed"):
            with scratch_store(server.url(), prefix="unolearn_sweep") as url:
                name = url.rsplit("/", 1)[1]
                assert re.fullmatch(r"unolearn_sweep_\d{14}_[0-9a-f]{8}", name)
                admin.execute(f'ALTER DATABASE "{name}" IS_TEMPLATE true')  # its drop will fail
                raise RuntimeError("the block failed")
        names = {r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'unolearn_sweep%'")}
        assert names == {recent, name}
        admin.execute(f'ALTER DATABASE "{name}" IS_TEMPLATE false')
        for leftover in names:
            admin.execute(f'DROP DATABASE "{leftover}"')
    finally:
        admin.close()


def test_a_stage_never_stores_its_result_in_a_clustering_made_after_it_started(ws):
    """Modules, guides and plans carry the clustering their stage started on; when the logs were re-clustered
    meanwhile (another machine on a shared store), storing them is refused and nothing is written."""
    from unolearn.errors import ClusteringChangedError
    from unolearn.records import Clustering

    ws.replace_clustering(Clustering(id=0, embedder="e", created_at=""), [(0, 1, b"\0" * 4)], [])
    started = ws.clustering_id()
    row = {"id": "m1", "cluster": 0, "kind": "expert", "path": "", "epochs": 1, "base_model": "b", "data_hash": "h",
           "config": "{}", "metrics": "{}", "train_logs": "[]", "val_logs": "[]", "seconds": 1.0}
    ws.add_module(row, started)
    with Workspace.open(ws.root, ws.store) as elsewhere:
        elsewhere.replace_clustering(Clustering(id=0, embedder="e", created_at=""), [(0, 1, b"\0" * 4)], [])
    for store in (lambda: ws.add_module({**row, "id": "m2"}, started), lambda: ws.adopt_module("m1", started),
                  lambda: ws.replace_plans(as_plans([(0, "uno", "primary", "m1", 1, 1.0, "won")]), started),
                  lambda: ws.ensure_guide(0, "1. Be brief.", [], [], [], {}, started)):
        with pytest.raises(ClusteringChangedError, match=f"re-clustered \\(clustering {started + 1}\\) while .* "
                                                         f"for clustering {started}"):
            store()
    assert ws.modules() == [] and ws.count("plans") == 0 and ws.count("modules") == 1
    ws.adopt_module("m1", ws.clustering_id())
    assert [m["id"] for m in ws.modules()] == ["m1"]


def test_doctor_reads_a_store_without_migrating_it(request, tmp_path):
    """`doctor --store URL` inspects a team's store: an empty or older one is reported, never migrated."""
    from conftest import store_of

    from unolearn.doctor import workspace_info

    with store_of(request, "postgresql") as url:
        check, info = workspace_info(tmp_path / "ws", url)
        assert check.status == "ok" and "empty (the next command that writes migrates it)" in check.detail
        assert info["schema_version"] == 0 and "logs" not in info
        with Workspace.open(tmp_path / "ws", url, migrate=False) as w:
            assert not w.conn.has_table("logs") and not w.conn.has_table("migrations")
        Workspace.open(tmp_path / "ws", url).close()
        check, info = workspace_info(tmp_path / "ws", url)
        assert check.status == "ok" and check.detail.endswith("0 logs, 0 clusters, 0 modules")
        down, _ = workspace_info(tmp_path / "ws", with_port(url, free_port()))
        assert down.status == "fail" and down.fix.startswith("check the URL, that the server is up")


def with_port(url: str, port: int) -> str:
    return re.sub(r":\d+/", f":{port}/", url, count=1)


def test_the_test_server_retries_a_taken_port_and_leaves_nothing_behind():
    """tests/postgres.py: a server that cannot start (its port taken) removes its folder, and the next port is
    tried; stopping a server twice, or one whose postmaster.pid is gone, is harmless."""
    import socket

    from postgres import find_bindir, start_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = set(Path("/tmp").glob("unolearn-pg-*"))
        with pytest.raises(RuntimeError, match="pg_ctl failed"):
            start_server(find_bindir(), ports=[port])
        new = set(Path("/tmp").glob("unolearn-pg-*")) - before  # other test sessions may be making theirs
        assert not [d for d in new if (d / "server.log").is_file() and f"{port}" in (d / "server.log").read_text()]
        server = start_server(find_bindir(), ports=[port, None])
    try:
        assert server.port != port and server.log()
    finally:
        server.stop()
        server.stop()
    assert not server.dir.exists()


def test_a_nul_in_an_input_line_or_a_logged_answer_sinks_no_batch(ws, tmp_path):
    """An input line holding a NUL byte is rejected (kept with the NUL shown as \\0), the valid logs beside it
    are stored; a pair keeps a logged answer without its NUL: on PostgreSQL, whose text cannot hold one, too."""
    from unolearn.ingest import ingest

    p = tmp_path / "logs.jsonl"
    p.write_bytes(b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a\\u0000b"}, '
                  b'{"role": "user", "content": "shorter"}]}\n{"broken\x00line\n')
    ingest(ws, [p], progress=False)
    assert ws.count("logs") == 1 and ws.conn.execute("SELECT raw FROM rejected").fetchone()[0] == '{"broken\\0line'
    (lg,) = ws.iter_logs()
    ws.put_pairs([("pair-1", lg.id, "revision", "[]", "b", lg.first_answer, None, "[]", "m", "t")])
    assert ws.pair_texts(lg.id) == [("[]", "b", "ab")]
