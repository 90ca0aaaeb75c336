"""The architecture's rules that a grep can check: SQL lives in the ``unolearn.store`` package only."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "unolearn"
SQL = re.compile(r"\.execute(many|script)?\(|\b(SELECT .+ FROM|INSERT (OR \w+ )?INTO|DELETE FROM|UPDATE \w+ SET|"
                 r"CREATE (TABLE|INDEX)|PRAGMA)\b")


def test_no_sql_outside_the_store():
    found = [f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
             for path in sorted(PACKAGE.rglob("*.py")) if path.relative_to(PACKAGE).parts[0] != "store"
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if SQL.search(line)]
    assert not found, "SQL outside the store:\n" + "\n".join(found)


def test_the_schema_allows_exactly_the_shared_names(ws):
    from unolearn.names import MODULE_KINDS, PATHS, PLANNED_SYSTEMS

    def check_values(table: str, column: str) -> set[str]:
        sql = ws.conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]
        found = re.search(rf"{column} TEXT NOT NULL CHECK \({column} IN \(([^)]*)\)\)", sql)
        return set(re.findall(r"'([^']+)'", found.group(1)))

    assert check_values("plans", "system") == set(PLANNED_SYSTEMS)
    assert check_values("plans", "path") == set(PATHS)
    assert check_values("modules", "kind") == set(MODULE_KINDS)
