"""Measure what distillation keeps of the literal requirements users name: quoted phrases and numbers.

    python scripts/measure_marker_recall.py [--as-now] WORKSPACE [WORKSPACE ...]

For each workspace (after `unolearn distill`), every log whose feedback gave rules (no rule is the model's verdict
that the feedback asks for no change, which this does not judge): the markers
(:func:`unolearn.rulefilter.markers`) of the user's sentences, and how many of them some rule of the same log names.
Prints one JSON line per workspace (``logs``, ``markers``, ``kept``, ``recall``, ``logs_losing_one``, and the first
``examples`` of a sentence whose marker was lost, with the log's rules), then one for all of them. Reads the store
only: no model call. ``--as-now``: the stored rules as distil now stores them from the same model output
(:func:`unolearn.rulefilter.feedback_rules` on them: the user's sentences naming a dropped marker added; for
workspaces distilled before that, so that one workspace gives both figures).
"""

from __future__ import annotations

import json
import sys

from unolearn.rulefilter import SENTENCE_END, feedback_rules, markers
from unolearn.store import Workspace


def measure(ws: Workspace, recall: bool = False, n_examples: int = 3) -> dict:
    """Marker recall of one workspace's feedback rules (``recall``: as distil now stores them)."""
    total = kept = losing = logs = 0
    examples = []
    for log, rules in ws.logs_with_feedback_rules():
        if not rules:
            continue
        logs += 1
        rules = feedback_rules(rules, log)[0] if recall else rules
        named = frozenset().union(*(markers(r) for r in rules))
        lost_here = False
        for sentence in (s.strip() for turn in log.feedback for s in SENTENCE_END.split(turn)):
            marks = markers(sentence)
            total, kept = total + len(marks), kept + len(marks & named)
            if marks - named:
                lost_here = True
                if len(examples) < n_examples:
                    examples.append({"sentence": sentence, "lost": sorted(marks - named), "rules": rules})
        losing += lost_here
    return {"logs": logs, "markers": total, "kept": kept, "recall": round(kept / total, 3) if total else None,
            "logs_losing_one": losing, "examples": examples}


def main(paths: list[str]) -> None:
    """One line per workspace, then the sums."""
    recall = "--as-now" in paths
    total = kept = 0
    for path in (p for p in paths if p != "--as-now"):
        with Workspace.open(path) as ws:
            row = measure(ws, recall)
        total, kept = total + row["markers"], kept + row["kept"]
        print(json.dumps({"workspace": path, **row}, ensure_ascii=False))
    print(json.dumps({"all": {"markers": total, "kept": kept, "recall": round(kept / total, 3) if total else None}}))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
