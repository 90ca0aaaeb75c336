"""What a cluster trains and is validated on: the seeded split of its logs, the logs a module may learn from
(screening and the per-user share), the training rows made of them, and the pairs exported for training
elsewhere (``unolearn pairs export``: TRL, OpenAI DPO).

Why a module of its own: training, the rulebook (whose guide is judged on the logs experts are) and selection
all need the same split, and none of them should import the others' stacks for it.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any, Protocol

from .distill import feedback_examples, no_rule_logs, numbered, pair_prompt
from .errors import ConfigError
from .prompts import critic_prompt
from .store import Workspace


class SplitSettings(Protocol):
    """What the split and the admission read of the training settings (:class:`unolearn.train.TrainConfig`)."""

    val_fraction: float
    seed: int
    min_val_logs: int
    max_user_share: float
    critic_folds: int


def split_ids(ids: list[str], val_fraction: float, seed: int, min_val: int = 1) -> tuple[list[str], list[str]]:
    """A seeded train/validation split: ``val_fraction`` of the ids held out, at least one of each when
    there are two or more ids, and at least ``min_val`` held out once there are 3 × ``min_val`` ids."""
    ids = sorted(ids)
    random.Random(seed).shuffle(ids)
    n_val = 0
    if len(ids) > 1 and val_fraction:
        floor = min_val if len(ids) >= 3 * min_val else 1
        n_val = min(len(ids) - 1, max(floor, round(len(ids) * val_fraction)))
    return sorted(ids[n_val:]), sorted(ids[:n_val])


def split_members(ws: Workspace, cluster: int, cfg: SplitSettings) -> tuple[list[str], list[str]]:
    """(train ids, validation ids) of a cluster: the logs with feedback rules are split (:func:`split_ids`
    with ``cfg``'s ``val_fraction``, ``seed`` and ``min_val_logs``); the logs whose feedback gave none
    (clustered as in the reference, for their no-change pairs) all train, since a validation item is
    judged against its feedback rules."""
    members = ws.cluster_members(cluster)
    no_rules = {log.id for log in no_rule_logs(ws, members)}
    train_ids, val_ids = split_ids([m for m in members if m not in no_rules], cfg.val_fraction, cfg.seed,
                                   cfg.min_val_logs)
    return sorted(train_ids + list(no_rules)), val_ids


def fold_ids(ids: list[str], folds: int, seed: int) -> list[list[str]]:
    """``ids`` dealt into ``folds`` seeded folds as even as can be (fewer when there are fewer ids; none when that
    leaves fewer than two)."""
    ids = sorted(ids)
    random.Random(seed).shuffle(ids)
    k = min(folds, len(ids))
    return [sorted(ids[i::k]) for i in range(k)] if k >= 2 else []


def critic_splits(ws: Workspace, cluster: int, cfg: SplitSettings) -> list[tuple[str, list[str], list[str]]]:
    """(kind, train ids, validation ids) of each critic a cluster gets.

    With ``critic_folds`` k ≥ 2 the critic is cross-fitted: its logs with rules are dealt into k folds
    (:func:`fold_ids`), a ``critic-fold`` module trains without each fold and is judged on it, so that every log is
    a validation item once (a held-out split leaves a cluster of 5 one item, never judged); the critic that serves
    trains on all the cluster's logs, judged by its folds. Otherwise (k ≤ 1, or one log with rules) one critic on
    the held-out split of :func:`split_members`."""
    members = ws.cluster_members(cluster)
    no_rules = {log.id for log in no_rule_logs(ws, members)}
    folds = fold_ids([m for m in members if m not in no_rules], cfg.critic_folds, cfg.seed)
    if not folds:
        return [("critic", *split_members(ws, cluster, cfg))]
    every = sorted(members)
    return [*(("critic-fold", sorted(set(every) - set(fold)), fold) for fold in folds), ("critic", every, [])]


#: The logs a user may always give a cluster's training: the share binds in clusters larger than 15 logs, so a
#: small cluster (a few users with a few dialogs each, as on a laptop) keeps its data, and one user's hundred
#: logs still count as a fifth of a large one.
USER_LOGS_FLOOR = 3


def admitted(ws: Workspace, log_ids: list[str], cfg: SplitSettings) -> tuple[list[str], dict[str, int]]:
    """The training logs a module may learn from, and how many were held out: ``quarantined`` (a feedback rule
    that screening flags: a link, contact data, a promotion, code, an instruction about the assistant) and
    ``capped`` (past one user's share of the cluster, ``max_user_share``, rounded up, but never below
    :data:`USER_LOGS_FLOOR`; every log without a user counts as one user; no cap where no log names its user).
    """
    from .screen import screen_reason

    clean = [i for i in log_ids if not any(screen_reason(r) for r in ws.rules_of(i, "feedback") or []
                                           if isinstance(r, str))]
    keep = clean
    if ws.has_identified_users():
        cap = max(USER_LOGS_FLOOR, math.ceil(cfg.max_user_share * len(clean)))
        taken: dict[str, int] = {}
        keep = []
        for log_id in clean:  # in id order: which of a user's logs is kept does not depend on arrival
            user = ws.get_log(log_id).user_key
            taken[user] = taken.get(user, 0) + 1
            if taken[user] <= cap:
                keep.append(log_id)
    return keep, {"quarantined": len(log_ids) - len(clean), "capped": len(clean) - len(keep)}


def expert_rows(ws: Workspace, log_ids: list[str]) -> list[dict[str, Any]]:
    """TRL conversational preference rows for the pairs of ``log_ids``, and a no-change row (chosen =
    rejected = the first answer) for each of them whose feedback gave no rules, as the reference does:
    its DPO term is zero, its SFT term keeps what the user did not object to."""
    rows = [pair_record(*row) for log_id in log_ids for row in ws.pair_texts(log_id)]
    keep = [pair_record(json.dumps(pair_prompt(log), ensure_ascii=False), answer, answer)
            for log in no_rule_logs(ws, log_ids) if (answer := log.first_answer) is not None]  # no_rule_logs: all
    return rows + keep


def learning_rows(kind: str, rows: list[dict[str, Any]]) -> int:
    """How many of a module's training rows teach a change (an expert's no-change rows do not)."""
    return sum(r["chosen"] != r["rejected"] for r in rows) if kind == "expert" else len(rows)


def critic_rows(ws: Workspace, log_ids: list[str]) -> list[dict[str, Any]]:
    """TRL conversational prompt–completion rows: (question, first answer) → numbered feedback rules."""
    return [{"prompt": critic_prompt(log.query, log.first_answer or "", log.lang),
             "completion": [{"role": "assistant", "content": numbered(rules)}]}
            for log, rules in feedback_examples(ws, log_ids)]


EXPORT_FORMATS = ("trl", "openai-dpo")


def export_pairs(ws: Workspace, fmt: str = "trl"):
    """Yield the stored preference pairs as records of ``fmt``.

    ``trl``: conversational ``{"prompt": [messages], "chosen": [assistant], "rejected": [assistant]}``,
    as TRL's DPOTrainer reads it. ``openai-dpo``: ``{"input": {"messages": [...]},
    "preferred_output": [assistant], "non_preferred_output": [assistant]}``.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown pair format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    for prompt, chosen, rejected in ws.all_pair_texts():
        yield pair_record(prompt, chosen, rejected, fmt)


def pair_record(prompt: str, chosen: str, rejected: str, fmt: str = "trl") -> dict[str, Any]:
    """One stored pair (its prompt as stored JSON) as a record of ``fmt`` (see :func:`export_pairs`)."""
    messages = json.loads(prompt)
    good = [{"role": "assistant", "content": chosen}]
    bad = [{"role": "assistant", "content": rejected}]
    if fmt == "trl":
        return {"prompt": messages, "chosen": good, "rejected": bad}
    return {"input": {"messages": messages}, "preferred_output": good, "non_preferred_output": bad}
