"""The learning funnel: where the logs go, from ingestion to a validated module.

Why it exists: when the learned modules do not change answers, the cause is somewhere in a long
chain (no feedback, no usable rules, tiny clusters, too few optimizer steps, adapters that answer as
the base model does, validation that rejects everything). The funnel counts each step, in total and
per cluster, so that a run, the quality benchmark and the report show where the signal is lost.

Keys (``run --json``, ``bench quality --json`` and the report; only ever added to): ``logs``,
``with_feedback``, ``feedback_rules_nonempty``, ``pairs``, ``clusters`` (``{"n", "sizes"}``),
``plans`` (per system, the count of clusters on each path), ``experts_trained``, ``expert_steps``,
``val_items`` (per expert id: its held-out validation logs) and ``val_answers_same_as_base`` (per
expert id: ``[identical, judged answers]`` over items × epochs; none when the expert was not judged),
``expert_win_rates`` (per expert id: its best epoch's validation win rate; None when not judged),
``expert_rows_unfit`` (per expert id: ``[left out, cut]``, its training rows that ``train.max_length``
left out, the prompt alone reaching it, or cut short; None for modules trained before it was counted),
``training_logs_held`` (per expert and critic id: ``[quarantined, capped]``, the training logs held out because
screening flagged one of their feedback rules, or past one user's share of the cluster; None before counted),
``experts_passed`` (experts whose best epoch reached the selection's win threshold, whatever their
cluster's gap: a high-gap cluster still takes its critic in ``uno``), ``critics_trained``,
``guides`` (clusters with a rulebook guide), ``guide_win_rates`` and ``guide_items`` (judged items; per guide module),
``per_cluster`` (the same counts for each cluster, with the gap behind its plan — ``gap``,
``gap_threshold``, ``gap_scorer``, ``gap_scored_logs`` — the validation win rate of each system's
path, ``win_rates``, and the expert's ``expert_win_rate`` and ``expert_passed``) and, from the
benchmark, ``test_paths`` (per system, test prompts on each of primary / reflective / guide / base /
unseen).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .names import PATHS, PLANNED_SYSTEMS
from .store import Workspace


def funnel(ws: Workspace) -> dict[str, Any]:
    """The funnel of the workspace as it stands (the keys in the module docstring, without ``test_paths``)."""
    raw = ws.funnel_rows()
    experts = [m for m in raw["modules"] if m["kind"] == "expert"]
    guides = list({m["cluster"]: m for m in raw["modules"] if m["kind"] == "guide"}.values())  # newest per cluster
    plans: dict[str, Counter] = {s: Counter() for s in PLANNED_SYSTEMS}
    for p in raw["plans"]:
        plans[p["system"]][p["path"]] += 1
    return {
        "logs": raw["logs"], "with_feedback": raw["with_feedback"],
        "feedback_rules_nonempty": raw["feedback_rules_nonempty"], "pairs": raw["pairs"],
        "clusters": {"n": len(raw["clusters"]), "sizes": [c["size"] for c in raw["clusters"]]},
        "plans": {s: {p: c[p] for p in PATHS} for s, c in plans.items()},
        "experts_trained": len(experts),
        "expert_steps": {m["id"]: m["steps"] for m in experts},
        "val_items": {m["id"]: m["val_items"] for m in experts},
        "expert_rows_unfit": {m["id"]: _unfit(m) for m in experts},
        "val_answers_same_as_base": {m["id"]: [m["same_as_base"], m["val_answers"]] for m in experts},
        "expert_win_rates": {m["id"]: _best_rate(raw, m["id"]) for m in experts},
        "experts_passed": sum(_passed(raw, m["id"]) for m in experts),
        "critics_trained": sum(m["kind"] == "critic" for m in raw["modules"]),
        "training_logs_held": {m["id"]: None if m["logs_quarantined"] is None
                               else [m["logs_quarantined"], m["logs_capped"]]
                               for m in raw["modules"] if m["kind"] in ("expert", "critic")},
        "guides": len(guides),
        "guide_win_rates": {m["id"]: _best_rate(raw, m["id"]) for m in guides},
        "guide_items": {m["id"]: m["val_answers"] for m in guides},
        "per_cluster": _per_cluster(raw),
    }


def _unfit(module: dict[str, Any]) -> list[int] | None:
    """``[left out, cut]``: a module's training rows that did not fit in ``max_length`` (None: not counted)."""
    if module["rows_left_out"] is None:
        return None
    return [module["rows_left_out"], module["rows_cut"]]


def _best_rate(raw: dict[str, Any], module_id: str) -> float | None:
    """An expert's best validation win rate over its epochs (None: not judged)."""
    rates = raw["epoch_win_rates"].get(module_id)
    return max(rates.values()) if rates else None


def _passed(raw: dict[str, Any], module_id: str) -> bool:
    """Whether an expert's best epoch reached the last selection's win threshold."""
    rate = _best_rate(raw, module_id)
    return rate is not None and raw["win_threshold"] is not None and rate >= raw["win_threshold"]


def _per_cluster(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Each cluster's size, usable rules, pairs, gap plan, final paths and module counts."""
    out = []
    for c in raw["clusters"]:
        k = c["cluster"]
        mods = [m for m in raw["modules"] if m["cluster"] == k]
        expert = next((m for m in reversed(mods) if m["kind"] == "expert"), None)
        gap = raw["gaps"].get(k) or {}
        out.append({
            **c, "gap_plan": gap.get("plan"), "gap": gap.get("gap"), "gap_threshold": gap.get("threshold"),
            "gap_scorer": gap.get("scorer"), "gap_scored_logs": gap.get("n_logs"),
            "paths": {p["system"]: p["path"] for p in raw["plans"] if p["cluster"] == k},
            "win_rates": {p["system"]: p["win_rate"] for p in raw["plans"] if p["cluster"] == k},
            "expert_steps": expert["steps"] if expert else None,
            "val_items": expert["val_items"] if expert else None,
            "expert_rows_unfit": _unfit(expert) if expert else None,
            "expert_win_rate": _best_rate(raw, expert["id"]) if expert else None,
            "expert_passed": _passed(raw, expert["id"]) if expert else None,
            "val_answers_same_as_base": [expert["same_as_base"], expert["val_answers"]] if expert else None,
            "critic": any(m["kind"] == "critic" for m in mods)})
    return out


def count_test_paths(routes: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Per system, how many test prompts took each path (``unseen``: no cluster near enough)."""
    return {system: {p: Counter(r)[p] for p in (*PATHS, "unseen")} for system, r in routes.items()}


def funnel_lines(f: dict[str, Any]) -> list[str]:
    """The funnel as a few lines of text for the terminal."""
    same = sum(v[0] for v in f["val_answers_same_as_base"].values())
    answers = sum(v[1] for v in f["val_answers_same_as_base"].values())
    rates = [round(r, 2) if r is not None else None for r in f.get("expert_win_rates", {}).values()]
    lines = [
        f"funnel: {f['logs']} logs → {f['with_feedback']} with feedback → {f['feedback_rules_nonempty']} with "
        f"feedback rules → {f['pairs']} pairs → {f['clusters']['n']} clusters (sizes {f['clusters']['sizes']})",
        f"        {f['experts_trained']} experts (optimizer steps {list(f['expert_steps'].values())}, validation "
        f"items {list(f['val_items'].values())}, {same}/{answers} validation answers identical to base, "
        f"best win rates {rates}) → "
        f"{f['experts_passed']} passed; {f['critics_trained']} critics; {f.get('guides', 0)} guides (win rates "
        f"{[None if r is None else round(r, 2) for r in f.get('guide_win_rates', {}).values()]} on "
        f"{list(f.get('guide_items', {}).values())} items)",
        "        plans: " + "; ".join(f"{s} " + ", ".join(f"{p} {n}" for p, n in c.items())
                                     for s, c in f["plans"].items()),
    ]
    unfit = [v for v in f.get("expert_rows_unfit", {}).values() if v and any(v)]
    if unfit:
        lines.append(f"        training rows longer than train.max_length: {sum(v[0] for v in unfit)} left out, "
                     f"{sum(v[1] for v in unfit)} cut (in {len(unfit)} experts)")
    if "test_paths" in f:
        lines.append("        test prompts: " + "; ".join(
            f"{s} " + ", ".join(f"{p} {n}" for p, n in c.items() if n) for s, c in f["test_paths"].items()))
    return lines
