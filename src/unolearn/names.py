"""The shared vocabulary of plans: systems, paths and module kinds.

The store's CHECK constraints, the command-line choices, the proxy's validation and the funnel all
use these names; a test checks that the schema allows exactly them.
"""

from __future__ import annotations

from enum import StrEnum


class System(StrEnum):
    """A system whose plans ``select`` stores, per cluster."""

    UNO = "uno"
    UNO_SINGLE = "uno-single"
    UNO_GUIDED = "uno-guided"


class PathName(StrEnum):
    """The path a request takes through a plan."""

    PRIMARY = "primary"
    REFLECTIVE = "reflective"
    GUIDE = "guide"
    BASE = "base"


class ModuleKind(StrEnum):
    """A kind of experience module."""

    EXPERT = "expert"
    CRITIC = "critic"
    GUIDE = "guide"
    CRITIC_FOLD = "critic-fold"  #: a critic trained without one fold of its cluster's logs, judged on that fold


#: The systems with stored plans, in the order reported.
PLANNED_SYSTEMS: tuple[str, ...] = tuple(s.value for s in System)
#: What ``answer``, the proxy and ``--system`` accept: a planned system, or the base model alone.
SERVED_SYSTEMS: tuple[str, ...] = (*PLANNED_SYSTEMS, "base")
#: Every path, in the order reported.
PATHS: tuple[str, ...] = tuple(p.value for p in PathName)
#: Every module kind.
MODULE_KINDS: tuple[str, ...] = tuple(k.value for k in ModuleKind)
#: The stages of the main job (``unolearn run``), in order.
STAGES: tuple[str, ...] = ("ingest", "distill", "cluster", "assess", "rulebook", "train", "select")
