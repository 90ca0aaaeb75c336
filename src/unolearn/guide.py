"""The guide path's rules, chosen per question: a cluster's rulebook entries, and for each of the cluster's
training logs (and each log behind an entry) the log's query vector (its anchor), supporting some entries or none.

Why per question: at small sizes a cluster can hold two topics whose users asked for different things (NFCats
and HelloBench in one cluster on a preference file nobody tuned for, issue 37); one guide per cluster then gives
a NFCats question the HelloBench rules. A question instead gets the entries supported by at least
:data:`NEAR_VOTES` of the :data:`NEAREST_LOGS` training logs whose queries are nearest to it — the rules memory's
way of choosing, from entries that earned their place (support, screening, no rejection) and whose cluster's guide
passed validation.
Each entry is given in the words of the nearest logs that asked for it (:attr:`Guide.says`), as the rules memory
gives them, where a wording passed screening on its own and stays within the merge similarity of the entry's text
(``RuleMember.servable``); otherwise, and for entries a person approved, in the entry's text. Why: the entry's
medoid is the most central wording, not the one a small model follows best; on held-out seed 1005 the guide lost
LexEval's "结论：" opening that the rules memory's "请用“结论：”开头，然后直接给出答案" got (docs/benchmarks.md).
Serving reads a :class:`Guide` from the published snapshot; ``select`` builds it and validates it the same way.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .prompts import GUIDE_HEADER

#: Training logs whose entries make one question's guide: as many as the ``rules`` memory's nearest logs.
NEAREST_LOGS = 5
#: Of those, how many must support an entry for it to be given: two users near the question asked for it, as
#: the rulebook's ``min_users`` asks two users in the cluster; one stray neighbour from another topic gives none.
NEAR_VOTES = 2


@dataclass(frozen=True)
class Guide:
    """A cluster's guide: its entries' texts (in rulebook order), and per anchor (one training log behind them)
    the log's unit query vector and the indices of the entries it supports."""

    lang: str
    rules: tuple[str, ...]
    anchors: np.ndarray  # (n_anchors, dim) float32, unit rows; (0, 0) for a guide stored without them
    supports: tuple[tuple[int, ...], ...]
    whole: str | None = None  # a guide known only by its text (stored before anchors existed): every question gets it
    sources: tuple[str, ...] = ()  # the anchors' log ids, where the guide was built (not stored: validation only)
    says: tuple[tuple[tuple[int, str], ...], ...] = ()  # per anchor: (entry, the wording its log lends it); () none

    @classmethod
    def build(cls, lang: str, rules: Sequence[str], anchors: np.ndarray, supports: Sequence[Sequence[int]],
              sources: Sequence[str] = (), says: Sequence[Sequence[tuple[int, str]]] = ()) -> Guide:
        """A guide from its parts (anchors are normalised here); ``sources``: the anchors' log ids; ``says``: per
        anchor, the (entry, wording) pairs its log may lend a prompt, one or more for each entry it supports (none:
        entries in their own texts)."""
        if says and [sorted({e for e, _ in said}) for said in says] != [sorted(set(s)) for s in supports]:
            raise ValueError("a guide's wordings must cover exactly the entries each anchor supports")
        vecs = np.asarray(anchors, dtype=np.float32)
        vecs = vecs.reshape(len(supports), -1) if len(supports) else np.zeros((0, 0), dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return cls(lang, tuple(rules), vecs / np.where(norms == 0, 1, norms),
                   tuple(tuple(sorted(set(s))) for s in supports), sources=tuple(sources),
                   says=tuple(tuple((int(e), str(w)) for e, w in said) for said in says))

    def without(self, log_id: str, min_support: int = 2) -> Guide:
        """The guide as if one training log had been held out: without its anchor, and without the entries it
        supports that keep fewer than ``min_support`` other anchors (the rulebook's ``min_users`` would have
        dropped them; their other supporters stay, as neighbours that support less); how it answers that log's
        question when validated on it."""
        if log_id not in self.sources:
            return self
        a = self.sources.index(log_id)
        others = [i for i in range(len(self.sources)) if i != a]
        left = {e: sum(e in self.supports[i] for i in others) for e in self.supports[a]}
        dropped = {e for e, n in left.items() if n < min_support}
        supports = tuple(tuple(e for e in self.supports[i] if e not in dropped) for i in others)
        says = tuple(tuple((e, w) for e, w in self.says[i] if e not in dropped) for i in others) if self.says else ()
        return Guide(self.lang, self.rules, self.anchors[others], supports,
                     sources=tuple(self.sources[i] for i in others), says=says)

    def text(self, indices: Sequence[int] | None = None) -> str | None:
        """The guide text of the entries ``indices`` (all by default), numbered, in rulebook order (None: none)."""
        if self.whole is not None:
            return self.whole
        chosen = range(len(self.rules)) if indices is None else sorted(set(indices))
        return self._numbered([self.rules[i] for i in chosen])

    def _numbered(self, rules: Sequence[str]) -> str | None:
        if not rules:
            return None
        return GUIDE_HEADER[self.lang].format(rules="\n".join(f"{i}. {r}" for i, r in enumerate(rules, 1)))

    def _order(self, vec: np.ndarray, k: int) -> list[int]:
        """The ``k`` anchors nearest to the unit vector ``vec``, nearest first."""
        sims = self.anchors @ np.asarray(vec, dtype=np.float32).reshape(-1)
        return [int(a) for a in np.argsort(-sims, kind="stable")[:k]]

    def _voted(self, order: list[int], votes: int) -> list[int]:
        counts = Counter(e for a in order for e in self.supports[a])
        return sorted(e for e, n in counts.items() if n >= votes) or sorted(self.supports[order[0]])

    def nearest(self, vec: np.ndarray, k: int = NEAREST_LOGS, votes: int = NEAR_VOTES) -> list[int]:
        """The entries supported by at least ``votes`` of the ``k`` anchors nearest to the unit vector ``vec`` (the
        nearest anchor's entries when none is); none without anchors."""
        if len(self.anchors) == 0:
            return []
        return self._voted(self._order(vec, k), votes)

    def for_query(self, vec: np.ndarray | None, k: int = NEAREST_LOGS) -> str | None:
        """The guide text for one question (its unit query vector; None: the whole guide): the :meth:`nearest`
        entries, each in the wordings the nearest anchors lend it (nearest first; a guide without wordings: in
        rulebook order, in the entries' own texts)."""
        if vec is None or len(self.anchors) == 0 or not self.says:
            return self.text(None if vec is None else self.nearest(vec, k))
        order = self._order(vec, k)
        chosen = set(self._voted(order, NEAR_VOTES))  # each supported by an anchor in ``order``, which words it
        return self._numbered(list(dict.fromkeys(w for a in order for e, w in self.says[a] if e in chosen)))

    def as_json(self) -> dict[str, Any] | str:
        """The stored form (modules' metrics, published snapshots)."""
        if self.whole is not None:
            return self.whole
        body: dict[str, Any] = {
            "lang": self.lang, "rules": list(self.rules), "supports": [list(s) for s in self.supports],
            "anchors": [base64.b64encode(v.astype(np.float32).tobytes()).decode() for v in self.anchors]}
        if self.says:
            body["says"] = [[[e, w] for e, w in said] for said in self.says]
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any] | str) -> Guide:
        """A guide from :meth:`as_json`, or from the text alone (snapshots of format 1): one entry, no anchors."""
        if isinstance(body, str):
            return cls("en", (), np.zeros((0, 0), dtype=np.float32), (), whole=body)
        vecs = [np.frombuffer(base64.b64decode(a), dtype=np.float32) for a in body["anchors"]]
        anchors = np.stack(vecs) if vecs else np.zeros((0, 0), dtype=np.float32)
        says = tuple(tuple((int(e), str(w)) for e, w in said) for said in body.get("says", ()))
        return cls(body["lang"], tuple(body["rules"]), anchors, tuple(tuple(s) for s in body["supports"]), says=says)
