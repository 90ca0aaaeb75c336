"""The architecture's rules that a grep or a parse can check: SQL lives in the ``unolearn.store`` package only;
no import cycle among the package's modules; serving reaches no training, distillation, selection or simulation
code (every import counts: those inside functions and under ``TYPE_CHECKING`` too)."""

import ast
import re
from collections import deque
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


def module_name(path: Path) -> str:
    parts = ["unolearn", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its text (``from . import x`` names ``x``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names} & set(MODULES)
            found |= subs if len(subs) == len(node.names) else subs | {base}
    return found & set(MODULES)


GRAPH = {name: imports_of(name) for name in MODULES}


def reached(start: list[str]) -> dict[str, str]:
    """Every module ``start`` reaches, with the module that imports it on the way."""
    via, todo = {s: "" for s in start}, deque(start)
    while todo:
        m = todo.popleft()
        for n in GRAPH[m] - set(via):
            via[n] = m
            todo.append(n)
    return via


def test_serving_reaches_no_training_stack():
    assert "unolearn.train" in reached(["unolearn.pipeline"])  # the walk finds what is imported
    via = reached([m for m in MODULES if m.startswith("unolearn.serve")] + ["unolearn.answer", "unolearn.snapshot"])
    for banned in ("unolearn.train", "unolearn.distill", "unolearn.selection", "unolearn.simulate"):
        chain = [banned]
        while chain[-1] in via and via[chain[-1]]:
            chain.append(via[chain[-1]])
        assert banned not in via, " ← ".join(chain)


def test_no_import_cycle():
    for name in MODULES:
        back = reached(sorted(GRAPH[name]))
        assert name not in back, f"{name} imports itself through {back[name]}"



def test_no_module_grows_past_what_a_maintainer_reads_at_once():
    """No module over 600 lines, no CLI module over 400: a stage that grows splits by concern (ward.py,
    training_data.py, store/admin.py are such splits)."""
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {m: n for m, n in sizes.items() if n > 600} == {}
    assert {m: n for m, n in sizes.items() if m.startswith("cli/") and n > 400} == {}
