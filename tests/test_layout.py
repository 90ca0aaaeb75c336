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
