"""The store: the workspace's database (every table, every SQL statement) and its folder of artifacts."""

from .base import DB_NAME, DEFAULT_DIR, now, resolve_dir, write_jsonl_atomic, write_lines_atomic
from .workspace import Workspace

__all__ = ["DB_NAME", "DEFAULT_DIR", "Workspace", "now", "resolve_dir", "write_jsonl_atomic", "write_lines_atomic"]
