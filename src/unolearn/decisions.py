"""The select stage's decisions: from what validation left of each cluster's expert, critic and guide
(:class:`Candidate`), the path it takes under each system (:func:`decide` for ``uno`` and ``uno-single``,
:func:`decide_guided` for ``uno-guided``). Pure functions of the validation results: :mod:`unolearn.selection`
validates, these decide, so a decision rule can be changed and tested without a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from .judge import coin_flips_at_most
from .names import PathName
from .records import Plan

#: The validation win rate at which an expert epoch, a critic or a guide is used.
WIN_THRESHOLD = 0.53
#: Under ``uno-guided`` a guide is kept unless validation showed it worse than base: more losses than wins, and a
#: one-sided sign test over the items not tied below this level. It is the rules memory's way of answering, the bar
#: the other paths must beat, not a module that must beat base first; a win rate below ½ on 3 items shows nothing
#: (seed 1010: NFCats' guide lost 2 of 3 items and the cluster fell to base, 3% against the rules memory's 37%; kept,
#: 37%). Fewer than 5 items decided never show it. Where no guide is, an expert or critic must show it beats base.
GUIDE_ALPHA = 0.05


def choose_epoch(outcomes: dict[int, list[float]], threshold: float) -> tuple[int | None, float]:
    """The epoch with the best win rate (earliest on ties), and that rate; None when below ``threshold``."""
    if not outcomes:
        return None, 0.0
    rates = {e: sum(v) / len(v) for e, v in outcomes.items() if v}
    if not rates:
        return None, 0.0
    best = max(sorted(rates), key=lambda e: rates[e])
    return (best if rates[best] >= threshold else None), rates[best]


@dataclass(frozen=True)
class Candidate:
    """One path a cluster could take, as validation left it: its module, the epoch that passed (None: none did,
    or not judged) and the best win rate (None: not judged)."""

    path: str
    module_id: str
    epoch: int | None
    win_rate: float | None
    outcomes: tuple[float, ...] = ()  # per-item outcomes (1 win, ½ tie, 0 loss) of the epoch used
    crossfit: bool = False  # a critic judged by its folds

    def shown_worse(self, alpha: float = GUIDE_ALPHA) -> bool:
        """Whether its outcomes show it worse than base: more losses than wins, and the chance of at most that many
        wins among the items not tied, were each a coin flip, below ``alpha`` (a one-sided sign test)."""
        wins, losses = self.outcomes.count(1.0), self.outcomes.count(0.0)
        return losses > wins and coin_flips_at_most(wins, wins + losses) < alpha

    def shown_better(self, alpha: float = GUIDE_ALPHA) -> bool:
        """Whether its outcomes show it better than base: more wins than losses, and the chance of at most that
        many losses among the items not tied, were each a coin flip, below ``alpha`` (the same sign test)."""
        wins, losses = self.outcomes.count(1.0), self.outcomes.count(0.0)
        return wins > losses and coin_flips_at_most(losses, wins + losses) < alpha

    def note(self) -> str:
        """Its path and win rate (its wins and losses where it has outcomes), for a plan's reason."""
        rate = "not judged" if self.win_rate is None else f"{self.win_rate:.2f}"
        wl = f" ({self.outcomes.count(1.0)} won, {self.outcomes.count(0.0)} lost of {len(self.outcomes)})" \
            if self.outcomes else ""
        return f"{self.path} {rate}{wl}"

    def reaches(self, threshold: float) -> bool:
        """Whether it may be used: judged, at or above ``threshold``, and (an expert) with an epoch that passed."""
        return (self.win_rate is not None and self.win_rate >= threshold
                and (self.path != PathName.PRIMARY or self.epoch is not None))


def decide_guided(cluster: int, expert: Candidate | None, critic: Candidate | None, guide: Candidate | None,
                  threshold: float) -> Plan:
    """The ``uno-guided`` plan: the guide unless its validation showed it worse than base
    (:meth:`Candidate.shown_worse`; not judged: not used); else the expert or the critic whose win rate is highest
    among those that reach ``threshold`` and whose items show them better than base (:meth:`Candidate.shown_better`;
    the expert on ties); else base.

    Why the guide first: it is the rules memory's way of answering (the rules of the nearest logs before the
    question), the bar an expert or critic must beat to replace it, and a few validation items against base cannot
    show that they do — on a preference file nobody tuned for, an expert that won its 2 items answered worse than
    the rules memory (issue 37); on held-out seed 1006 a critic that won its 2 items replaced a guide that tied
    base, at 2.4 times the guide's prompt tokens and no better answers; on seed 1017 one that won 2 of 3 items
    served LexEval (no entry had two users) at 790 prompt tokens against the rules memory's 297, no better."""
    tried = [c for c in (guide, expert, critic) if c is not None]
    rates = "; ".join(c.note() for c in tried)
    ok = [c for c in tried if (c.win_rate is not None and not c.shown_worse() if c is guide
                               else c.reaches(threshold) and c.shown_better())]
    if not ok:
        return Plan(cluster=cluster, system="uno-guided", path=PathName.BASE,
                    reason=f"no path reached {threshold:.2f} and showed it beats base ({rates or 'nothing validated'})")
    best = ok[0] if ok[0].path == PathName.GUIDE else max(ok, key=lambda c: c.win_rate or 0.0)
    why = "the guide validated, not worse than base" if best.path == PathName.GUIDE else "best validated path"
    return Plan(cluster=cluster, system="uno-guided", path=best.path, module_id=best.module_id, epoch=best.epoch,
                win_rate=best.win_rate, reason=f"{why} ({rates})")


def decide(cluster: int, gap_plan: str | None, expert: Candidate | None, critic: Candidate | None,
           not_judged: str | None = None, gap_note: str = "", threshold: float = WIN_THRESHOLD) -> list[Plan]:
    """The UNO and UNO-Single plans of one cluster from its gap plan and validation results.

    ``not_judged`` says why an expert was not judged; ``gap_note`` gives the gap behind the plan. The paths are
    the paper's, with one gate the paper does not have: a critic is used only when its reflective path reached
    ``threshold`` on validation, as an expert must (else base). Without the gate a critic that lost its items
    still served: on held-out seed 1004 ``uno`` trailed ``base`` by 3.3 points, HelloBench losing 10 (issue 37).
    """
    gap = f"; {gap_note}" if gap_note else ""
    if expert and expert.epoch is not None and gap_plan != PathName.REFLECTIVE:
        why = f"expert epoch {expert.epoch} won {expert.win_rate:.2f} of validation comparisons{gap}"
        return [_plan(cluster, s, expert, why) for s in ("uno", "uno-single")]
    if gap_plan == PathName.REFLECTIVE:
        why = f"high cognitive gap{gap}" + (f"; {_expert_note(expert, not_judged)}, not used" if expert else "")
    elif expert:
        why = _expert_note(expert, not_judged) + gap
    else:
        why = f"no expert (too few pairs, or not trained){gap}"
    rate = expert.win_rate if expert else None
    single = Plan(cluster=cluster, system="uno-single", path=PathName.BASE, win_rate=rate, reason=why)
    if critic is None:
        return [Plan(cluster=cluster, system="uno", path=PathName.BASE, win_rate=rate, reason=why + "; no critic"),
                single]
    judged = "not judged" if critic.win_rate is None else (
        f"won {critic.win_rate:.2f} of validation comparisons"
        + (f" ({'cross-fitted, ' * critic.crossfit}{len(critic.outcomes)} items)" if critic.outcomes else ""))
    if critic.reaches(threshold):
        return [_plan(cluster, "uno", critic, f"{why}; critic epoch {critic.epoch} ({judged})"), single]
    below = "" if critic.win_rate is None else f", below {threshold:.2f}"
    return [Plan(cluster=cluster, system="uno", path=PathName.BASE, win_rate=critic.win_rate,
                 reason=f"{why}; critic epoch {critic.epoch} {judged}{below}: not used"), single]


def _plan(cluster: int, system: str, c: Candidate, why: str) -> Plan:
    """The plan that takes candidate ``c``."""
    return Plan(cluster=cluster, system=system, path=c.path, module_id=c.module_id, epoch=c.epoch,
                win_rate=c.win_rate, reason=why)


def _expert_note(expert: Candidate, not_judged: str | None) -> str:
    """What an expert's validation came to, for a plan's reason."""
    if not_judged:
        return f"expert not judged: {not_judged}"
    if expert.epoch is not None:
        return f"expert epoch {expert.epoch} won {expert.win_rate:.2f} of validation comparisons"
    return f"expert failed validation (best win rate {expert.win_rate:.2f})"
