"""The schema's migrations: named functions, applied in order, each recorded once by name.

A released migration is never edited or renamed, only followed by new ones (the pattern of
simonw/llm's migrations.py). ``Workspace.open`` applies the missing ones, each in one transaction;
SQLite workspaces from before the ``migrations`` table counted them in ``PRAGMA user_version``, which
is still kept equal to the number applied there.

Both databases run the same migrations: the DDL is written with SQLite's type names, which the
connection's dialect maps to its own (:meth:`Dialect.ddl`); where SQLite needs a procedure that
PostgreSQL does not (rebuilding a table to change a CHECK), the migration says so. On SQLite each
one still produces, statement for statement, the schema it always did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime

from ..errors import WorkspaceError
from .dialect import Connection
from .snapshots import publish

#: Every migration, in the order applied.
MIGRATIONS: list[Callable[[Connection], None]] = []


def migration(fn: Callable[[Connection], None]) -> Callable[[Connection], None]:
    """Register ``fn`` as the next migration."""
    MIGRATIONS.append(fn)
    return fn


def _script(c: Connection, sql: str) -> None:
    """Run the statements of ``sql`` (DDL in SQLite's type names) one by one, in the caller's transaction."""
    for statement in c.dialect.ddl(sql).split(";"):
        if statement.strip():
            c.execute(statement)


@migration
def m001_logs_rejected_runs(c: Connection) -> None:
    """Logs, rejected input records, stage runs."""
    _script(c, """
    CREATE TABLE logs (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        lang TEXT NOT NULL,
        has_feedback INTEGER NOT NULL,
        ingested_at TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX logs_source ON logs(source);
    CREATE TABLE rejected (
        id TEXT PRIMARY KEY,
        file TEXT NOT NULL,
        line INTEGER NOT NULL,
        reason TEXT NOT NULL,
        raw TEXT NOT NULL,
        rejected_at TEXT NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        stage TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        status TEXT NOT NULL,
        config TEXT NOT NULL,
        result TEXT
    );
    """)


@migration
def m002_caches(c: Connection) -> None:
    """The model response cache and the embedding cache."""
    _script(c, """
    CREATE TABLE llm_cache (
        key TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        response TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE embeddings (
        model TEXT NOT NULL,
        text_hash TEXT NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (model, text_hash)
    );
    """)


@migration
def m003_analysis_stages(c: Connection) -> None:
    """The analysis stages: distilled rules, preference pairs, clusters, cognitive gap."""
    _script(c, """
    CREATE TABLE rules (
        log_id TEXT NOT NULL REFERENCES logs(id),
        kind TEXT NOT NULL CHECK (kind IN ('prior', 'feedback')),
        rules TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (log_id, kind)
    );
    CREATE TABLE pairs (
        id TEXT PRIMARY KEY,
        log_id TEXT NOT NULL REFERENCES logs(id),
        origin TEXT NOT NULL CHECK (origin IN ('revision', 'edit', 'implicit')),
        prompt TEXT NOT NULL,
        chosen TEXT NOT NULL,
        rejected TEXT NOT NULL,
        score REAL,
        candidates TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX pairs_log ON pairs(log_id);
    CREATE TABLE clusters (
        id INTEGER PRIMARY KEY,
        size INTEGER NOT NULL,
        centroid BLOB NOT NULL,
        embedder TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE cluster_members (
        log_id TEXT PRIMARY KEY REFERENCES logs(id),
        cluster INTEGER NOT NULL REFERENCES clusters(id)
    );
    CREATE INDEX cluster_members_cluster ON cluster_members(cluster);
    CREATE TABLE novelty (
        log_id TEXT NOT NULL REFERENCES logs(id),
        rule_index INTEGER NOT NULL,
        scorer TEXT NOT NULL,
        novelty REAL NOT NULL,
        PRIMARY KEY (log_id, rule_index, scorer)
    );
    CREATE TABLE gaps (
        cluster INTEGER PRIMARY KEY REFERENCES clusters(id),
        scorer TEXT NOT NULL,
        gap REAL NOT NULL,
        gap_mean REAL NOT NULL,
        gap_max REAL NOT NULL,
        n_logs INTEGER NOT NULL,
        plan TEXT NOT NULL CHECK (plan IN ('primary', 'reflective')),
        threshold REAL NOT NULL
    );
    """)


@migration
def m004_modules_validation_plans(c: Connection) -> None:
    """Experience modules (trained adapters), their validation, and the final plan per cluster."""
    _script(c, """
    CREATE TABLE modules (
        id TEXT PRIMARY KEY,
        cluster INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('expert', 'critic')),
        path TEXT NOT NULL,
        epochs INTEGER NOT NULL,
        base_model TEXT NOT NULL,
        data_hash TEXT NOT NULL,
        config TEXT NOT NULL,
        metrics TEXT NOT NULL,
        train_logs TEXT NOT NULL,
        val_logs TEXT NOT NULL,
        seconds REAL NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX modules_cluster ON modules(cluster, kind);
    CREATE TABLE validation (
        module_id TEXT NOT NULL REFERENCES modules(id),
        epoch INTEGER NOT NULL,
        log_id TEXT NOT NULL,
        sample INTEGER NOT NULL,
        score_initial REAL NOT NULL,
        score_module REAL NOT NULL,
        bleu REAL NOT NULL,
        length_ratio REAL NOT NULL,
        outcome REAL NOT NULL,
        PRIMARY KEY (module_id, epoch, log_id, sample)
    );
    CREATE TABLE plans (
        cluster INTEGER NOT NULL,
        system TEXT NOT NULL CHECK (system IN ('uno', 'uno-single')),
        path TEXT NOT NULL CHECK (path IN ('primary', 'reflective', 'base')),
        module_id TEXT,
        epoch INTEGER,
        win_rate REAL,
        reason TEXT NOT NULL,
        PRIMARY KEY (cluster, system)
    );
    """)


@migration
def m005_served_feedback(c: Connection) -> None:
    """Interactions served by the proxy and the feedback attached to them later."""
    _script(c, """
    CREATE TABLE served (
        response_id TEXT PRIMARY KEY,
        messages TEXT NOT NULL,
        answer TEXT NOT NULL,
        route TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at TEXT NOT NULL,
        log_id TEXT
    );
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        response_id TEXT NOT NULL REFERENCES served(response_id),
        text TEXT,
        action TEXT CHECK (action IN ('like', 'dislike', 'copy', 'regenerate', 'edit')),
        edited TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX feedback_response ON feedback(response_id);
    """)


@migration
def m006_validation_against_fresh_base(c: Connection) -> None:
    """Validation compares each checkpoint with a fresh base answer, one row per item (judge samples averaged);
    same_as_base marks a checkpoint answer identical to the base answer.
    """
    _script(c, """
    DELETE FROM validation;
    ALTER TABLE validation ADD COLUMN same_as_base INTEGER NOT NULL DEFAULT 0;
    """)


@migration
def m007_served_user(c: Connection) -> None:
    """The user of a served request (the OpenAI ``user`` parameter), carried into its log."""
    _script(c, f"ALTER TABLE served ADD COLUMN {c.dialect.quote('user')} TEXT")


@migration
def m008_guidance(c: Connection) -> None:
    """Guidance: cluster rulebooks, people's decisions on their entries, the guide module kind and the uno-guided plans
    (SQLite cannot change a CHECK: the two tables are rebuilt, rows kept; PostgreSQL alters the CHECKs).
    """
    if c.dialect.name == "sqlite":
        _rebuild_modules_and_plans(c)
    else:
        _script(c, """
        ALTER TABLE modules DROP CONSTRAINT modules_kind_check;
        ALTER TABLE modules ADD CONSTRAINT modules_kind_check CHECK (kind IN ('expert', 'critic', 'guide'));
        ALTER TABLE plans DROP CONSTRAINT plans_system_check;
        ALTER TABLE plans ADD CONSTRAINT plans_system_check CHECK (system IN ('uno', 'uno-single', 'uno-guided'));
        ALTER TABLE plans DROP CONSTRAINT plans_path_check;
        ALTER TABLE plans ADD CONSTRAINT plans_path_check CHECK (path IN ('primary', 'reflective', 'guide', 'base'));
        """)
    _script(c, """
    CREATE TABLE rulebook (
        id TEXT PRIMARY KEY,
        cluster INTEGER NOT NULL,
        text TEXT NOT NULL,
        lang TEXT NOT NULL,
        members TEXT NOT NULL,
        n_logs INTEGER NOT NULL,
        n_users INTEGER NOT NULL,
        novelty REAL,
        status TEXT NOT NULL,
        contradicted_by TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX rulebook_cluster ON rulebook(cluster, status);
    CREATE TABLE rule_decisions (
        log_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
        entry_id TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        PRIMARY KEY (log_id, rule)
    );
    """)


def _rebuild_modules_and_plans(c: Connection) -> None:
    """m008 on SQLite: ``modules`` and ``plans`` rebuilt with the new CHECKs, their rows kept."""
    _script(c, """
    CREATE TABLE modules_new (
        id TEXT PRIMARY KEY,
        cluster INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('expert', 'critic', 'guide')),
        path TEXT NOT NULL,
        epochs INTEGER NOT NULL,
        base_model TEXT NOT NULL,
        data_hash TEXT NOT NULL,
        config TEXT NOT NULL,
        metrics TEXT NOT NULL,
        train_logs TEXT NOT NULL,
        val_logs TEXT NOT NULL,
        seconds REAL NOT NULL,
        created_at TEXT NOT NULL
    );
    INSERT INTO modules_new SELECT * FROM modules;
    DROP TABLE modules;
    ALTER TABLE modules_new RENAME TO modules;
    CREATE INDEX modules_cluster ON modules(cluster, kind);
    CREATE TABLE plans_new (
        cluster INTEGER NOT NULL,
        system TEXT NOT NULL CHECK (system IN ('uno', 'uno-single', 'uno-guided')),
        path TEXT NOT NULL CHECK (path IN ('primary', 'reflective', 'guide', 'base')),
        module_id TEXT,
        epoch INTEGER,
        win_rate REAL,
        reason TEXT NOT NULL,
        PRIMARY KEY (cluster, system)
    );
    INSERT INTO plans_new SELECT * FROM plans;
    DROP TABLE plans;
    ALTER TABLE plans_new RENAME TO plans;
    """)


@migration
def m009_clustering_versions(c: Connection) -> None:
    """Clustering versions: modules and plans belong to the clustering they were made for, so a re-clustering never
    routes through stale plans or reuses another cluster's module. The stored clustering (if any) becomes version 1,
    with the unseen distance of the last cluster run.
    """
    d = c.dialect
    _script(c, f"""
    CREATE TABLE clusterings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        embedder TEXT NOT NULL,
        threshold REAL,
        unseen_distance REAL,
        fingerprint TEXT,
        created_at TEXT NOT NULL
    );
    INSERT INTO clusterings (embedder, unseen_distance, fingerprint, created_at)
        SELECT min(embedder),
               (SELECT {d.json_real('config', 'unseen_distance')} FROM runs
                WHERE stage = 'cluster' AND status = 'ok' ORDER BY id DESC LIMIT 1),
               (SELECT {d.json_text('result', 'fingerprint')} FROM runs
                WHERE stage = 'cluster-input' AND status = 'ok' ORDER BY id DESC LIMIT 1),
               min(created_at)
        FROM clusters HAVING count(*) > 0;
    ALTER TABLE modules ADD COLUMN clustering INTEGER REFERENCES clusterings(id);
    UPDATE modules SET clustering = (SELECT max(id) FROM clusterings);
    ALTER TABLE plans ADD COLUMN clustering INTEGER REFERENCES clusterings(id);
    UPDATE plans SET clustering = (SELECT max(id) FROM clusterings);
    """)


@migration
def m010_feedback_uid(c: Connection) -> None:
    """A feedback's own id, given by the proxy that received it: a write retried after its connection broke
    (its commit unknown) stores the feedback once."""
    _script(c, """
    ALTER TABLE feedback ADD COLUMN uid TEXT;
    CREATE UNIQUE INDEX feedback_uid ON feedback(uid);
    """)


@migration
def m011_plan_snapshots(c: Connection) -> None:
    """Published plan snapshots: the proxy serves a whole, versioned plan (its id is the plan id) and picks
    up a newer one while it runs. A workspace with plans publishes them as its first snapshot."""
    _script(c, """
    CREATE TABLE plan_snapshots (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        clustering INTEGER REFERENCES clusterings(id),
        body TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    """)
    if c.execute("SELECT 1 FROM plans LIMIT 1").fetchone():
        publish(c)


@migration
def m012_incremental_clustering(c: Connection) -> None:
    """Incremental clustering: how each version was made, the logs added since the last full one, and
    per cluster its spread (the radius within which a new log joins it) and the versions that changed it."""
    _script(c, """
    ALTER TABLE clusterings ADD COLUMN mode TEXT NOT NULL DEFAULT 'full';
    ALTER TABLE clusterings ADD COLUMN added INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE clusterings ADD COLUMN unfit INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE clusterings ADD COLUMN settings TEXT;
    CREATE TABLE cluster_spread (
        cluster INTEGER PRIMARY KEY,
        radius REAL,
        changes TEXT NOT NULL
    );
    """)


@migration
def m013_forgetting(c: Connection) -> None:
    """What deletion needs to find: each log's user (as a column, from its record) and what each cached model
    response was asked about (``cache_owners``: the logs whose text, the modules whose adapter or guide the
    request carried), indexed for ``forget``."""
    _script(c, """
    ALTER TABLE logs ADD COLUMN user_id TEXT;
    CREATE INDEX logs_user ON logs(user_id);
    CREATE INDEX logs_ingested ON logs(ingested_at);
    CREATE INDEX served_log ON served(log_id);
    CREATE TABLE cache_owners (
        key TEXT NOT NULL,
        owner TEXT NOT NULL,
        PRIMARY KEY (key, owner)
    );
    CREATE INDEX cache_owners_owner ON cache_owners(owner);
    """)
    users = [(u, i) for i, record in c.execute("SELECT id, record FROM logs").fetchall()
             if (u := json.loads(record).get("user")) is not None]
    c.executemany("UPDATE logs SET user_id = ? WHERE id = ?", users)


@migration
def m014_feedback_collected(c: Connection) -> None:
    """Each feedback names the log it was collected into, so feedback that arrives after its answer became a
    log is collected by the next run (into a log of its own) instead of being dropped."""
    _script(c, """
    ALTER TABLE feedback ADD COLUMN log_id TEXT;
    UPDATE feedback SET log_id = (SELECT s.log_id FROM served s WHERE s.response_id = feedback.response_id);
    CREATE INDEX feedback_log ON feedback(log_id);
    """)


@migration
def m015_screening_and_rejections(c: Connection) -> None:
    """Screening: why an entry was quarantined. Rejections that hold: what recognises a rejected rule (a keyed
    hash of its normalised text, its embedding), never the text, so that a rejection survives rebuilds, new
    logs, paraphrases and the forgetting of the users who wrote it; the key of that hash."""
    _script(c, """
    ALTER TABLE rulebook ADD COLUMN screened TEXT;
    CREATE TABLE rejections (
        digest TEXT PRIMARY KEY,
        embedder TEXT,
        vector BLOB,
        decided_at TEXT NOT NULL
    );
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """)


@migration
def m016_tenants(c: Connection) -> None:
    """The tenants of a workspace, recorded in its own (the default tenant's) store: each other tenant keeps its
    logs and everything made from them in a store of its own (:mod:`unolearn.tenants`)."""
    _script(c, """
    CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
    );
    """)


@migration
def m017_pulls(c: Connection) -> None:
    """Where each pull from a platform (a Langfuse server's public API) stopped: the newest start time of the
    observations, and the newest time of the scores, it has stored; no personal data."""
    _script(c, """
    CREATE TABLE pulls (
        source TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """)


@migration
def m018_critic_folds(c: Connection) -> None:
    """The ``critic-fold`` module kind: a critic trained without one fold of its cluster's logs, judged on that fold
    (:func:`unolearn.training_data.critic_splits`). SQLite rebuilds ``modules`` from its own stored definition with
    the wider CHECK, rows kept; PostgreSQL alters the CHECK."""
    kinds = "CHECK (kind IN ('expert', 'critic', 'guide'))"
    wider = "CHECK (kind IN ('expert', 'critic', 'guide', 'critic-fold'))"
    if c.dialect.name != "sqlite":
        _script(c, f"""
        ALTER TABLE modules DROP CONSTRAINT modules_kind_check;
        ALTER TABLE modules ADD CONSTRAINT modules_kind_check {wider};
        """)
        return
    (sql,) = c.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'modules'").fetchone()
    if kinds not in sql:
        raise WorkspaceError(f"migration m018: the modules table has an unknown kind CHECK: {sql}")
    c.execute(re.sub(r'^CREATE TABLE\s+"?modules"?', "CREATE TABLE modules_new", sql.replace(kinds, wider)))
    _script(c, """
    INSERT INTO modules_new SELECT * FROM modules;
    DROP TABLE modules;
    ALTER TABLE modules_new RENAME TO modules;
    CREATE INDEX modules_cluster ON modules(cluster, kind);
    """)


@migration
def m019_rejected_users(c: Connection) -> None:
    """The user ids a rejected record names (a JSON list, found before its raw text was redacted), so that
    ``forget --user`` reaches it whatever its format calls the user; NULL in rows kept before."""
    _script(c, "ALTER TABLE rejected ADD COLUMN users TEXT")


def applied(c: Connection) -> set[str]:
    """The names of the migrations applied to the database of ``c`` (a read: nothing is created).

    A SQLite workspace from before the ``migrations`` table counts its first ``user_version`` as applied.
    """
    names = {r[0] for r in c.execute("SELECT name FROM migrations")} if c.has_table("migrations") else set()
    version = c.user_version()
    if not names and version:
        if version > len(MIGRATIONS):
            raise WorkspaceError(f"schema version {version} is newer than this unolearn ({len(MIGRATIONS)}); "
                                 "upgrade unolearn")
        names = {fn.__name__ for fn in MIGRATIONS[:version]}
    unknown = names - {fn.__name__ for fn in MIGRATIONS}
    if unknown:
        raise WorkspaceError(f"the workspace has migration {sorted(unknown)[0]}, unknown to this unolearn; "
                             "upgrade unolearn")
    return names


def unrecorded(c: Connection) -> bool:
    """True for an early SQLite workspace: migrations counted in ``user_version``, not (yet) in the table."""
    return bool(c.user_version()) and not (
        c.has_table("migrations") and c.execute("SELECT 1 FROM migrations LIMIT 1").fetchone())


def record_table(c: Connection) -> None:
    """Create the ``migrations`` table when missing (inside the caller's transaction), recording there the
    migrations an early SQLite workspace counted in ``user_version``."""
    legacy = sorted(applied(c)) if unrecorded(c) else []
    if not c.has_table("migrations"):
        c.execute(c.dialect.ddl("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"))
    c.executemany("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", [(n, _now()) for n in legacy])


def apply(c: Connection, fn: Callable[[Connection], None]) -> None:
    """Run one migration on ``c`` (inside the caller's transaction) and record it."""
    fn(c)
    c.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (fn.__name__, _now()))
    c.set_user_version(MIGRATIONS.index(fn) + 1)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
