"""Build workspace-m009.sqlite3: a workspace at schema m009 with rows in every table.

The upgrade test (tests/test_store.py) opens a copy of it with the current unolearn and checks that
every row survived the migrations added since. Run once when a new fixture is needed (it is committed);
never rebuild an existing one: it stands for workspaces users already have.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from unolearn.store.dialect import SQLiteConnection  # noqa: E402
from unolearn.store.migrations import MIGRATIONS, applied, apply  # noqa: E402

ROWS = [
    "INSERT INTO logs VALUES ('log-1', 'f.jsonl', 'en', 1, 't', '{\"query\": \"q\"}')",
    "INSERT INTO rejected VALUES ('r-1', 'f.jsonl', 3, 'bad', '{}', 't')",
    "INSERT INTO runs (stage, started_at, finished_at, status, config, result) "
    "VALUES ('cluster', 't', 't', 'ok', '{}', '{}')",
    "INSERT INTO llm_cache VALUES ('k', 'm', 'r', 't')",
    "INSERT INTO embeddings VALUES ('m', 'h', x'0000')",
    "INSERT INTO rules VALUES ('log-1', 'feedback', '[\"Be brief.\"]', 'm', 't')",
    "INSERT INTO pairs VALUES ('p-1', 'log-1', 'revision', '[]', 'c', 'r', 9.0, '[]', 'm', 't')",
    "INSERT INTO clusterings (embedder, threshold, unseen_distance, fingerprint, created_at) "
    "VALUES ('e', 1.0, NULL, 'fp', 't')",
    "INSERT INTO clusters VALUES (0, 1, x'00000000', 'e', 't')",
    "INSERT INTO cluster_members VALUES ('log-1', 0)",
    "INSERT INTO novelty VALUES ('log-1', 0, 'embedding', 0.2)",
    "INSERT INTO gaps VALUES (0, 'embedding', 0.2, 0.2, 0.2, 1, 'reflective', 0.084)",
    "INSERT INTO modules VALUES ('mod-1', 0, 'expert', 'artifacts/modules/mod-1', 2, 'b@h', 'h', '{}', '{}', "
    "'[]', '[]', 1.0, 't', 1)",
    "INSERT INTO validation VALUES ('mod-1', 1, 'log-1', 0, 5, 6, 0.5, 1.0, 1.0, 0)",
    "INSERT INTO plans VALUES (0, 'uno', 'primary', 'mod-1', 1, 1.0, 'won', 1)",
    "INSERT INTO served VALUES ('resp-1', '[]', 'a', 'base', 'm', 't', NULL, 'u1')",
    "INSERT INTO feedback (response_id, text, action, edited, created_at) "
    "VALUES ('resp-1', 'too long', NULL, NULL, 't')",
    "INSERT INTO rulebook VALUES ('e-1', 0, 'Be brief.', 'en', '[]', 1, 1, 0.2, 'kept', NULL, 't')",
    "INSERT INTO rule_decisions VALUES ('log-1', 'Be brief.', 'approved', 'e-1', 't')",
]

if __name__ == "__main__":
    out = Path(__file__).with_name("workspace-m009.sqlite3")
    out.unlink(missing_ok=True)
    conn = SQLiteConnection(out)
    applied(conn)
    for fn in MIGRATIONS[:9]:
        apply(conn, fn)
    for sql in ROWS:
        conn.execute(sql)
    conn.close()
    print(out)
