"""The plan and adapter vocabulary: what ``select`` writes and every serving path reads.

Why a module of its own: serving (``answer``, the snapshot, the proxy) needs the names and folders of adapters and
the stored plans, but must not import the training or selection stacks that produce them.
"""

from __future__ import annotations

from pathlib import Path

from .backends import ChatModel
from .errors import InputError
from .records import Plan
from .store import Workspace


def load_plan(ws: Workspace, cluster: int, system: str) -> Plan | None:
    """The stored plan of ``cluster`` for ``system`` (None before `unolearn select`)."""
    return ws.plan(cluster, system)


def adapter_name(module_id: str, epoch: int) -> str:
    """The backend name of one module epoch's adapter."""
    return f"{module_id}@{epoch}"


async def ensure_adapter(model: ChatModel, ws: Workspace, module_id: str, epoch: int) -> str:
    """Load one module epoch's adapter into ``model``; return its name."""
    module = ws.module(module_id)
    if not module:
        raise InputError(f"no module {module_id}")
    name = adapter_name(module_id, epoch)
    await model.add_adapter(name, str(epoch_dir(module["path"], epoch)))
    return name


def epoch_dir(module_path: str | Path, epoch: int) -> Path:
    """The adapter folder of one epoch of a module stored at ``module_path``."""
    return Path(module_path) / f"epoch-{epoch}"
