"""Prometheus metrics of the proxy."""

from __future__ import annotations

from collections import Counter, defaultdict

from .config import BUCKETS


class Metrics:
    """Counters and a latency histogram, exposed in the Prometheus text format."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.upstream_errors: Counter[str] = Counter()
        self.feedback: Counter[str] = Counter()
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.sums: defaultdict[str, float] = defaultdict(float)

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Count one chat request that took ``path`` and ended with ``status`` after ``seconds``."""
        self.requests[(path, status)] += 1
        self.sums[path] += seconds
        counts = self.buckets[path]
        for i, le in enumerate(BUCKETS):
            if seconds <= le:
                counts[i] += 1

    def render(self, queue_depth: int, plan: tuple[int | None, float | None, int] = (None, None, 0)) -> str:
        """The text exposition; ``plan``: the id of the plan served, its age in seconds, reloads so far."""
        lines = ["# HELP unolearn_requests_total Chat completion requests by path taken and HTTP status.",
                 "# TYPE unolearn_requests_total counter"]
        lines += [f'unolearn_requests_total{{path="{p}",status="{s}"}} {n}'
                  for (p, s), n in sorted(self.requests.items())]
        lines += ["# HELP unolearn_request_duration_seconds Chat completion latency by path taken.",
                  "# TYPE unolearn_request_duration_seconds histogram"]
        for path, counts in sorted(self.buckets.items()):
            total = sum(n for (p, _), n in self.requests.items() if p == path)
            lines += [f'unolearn_request_duration_seconds_bucket{{path="{path}",le="{le:g}"}} {n}'
                      for le, n in zip(BUCKETS, counts)]
            lines += [f'unolearn_request_duration_seconds_bucket{{path="{path}",le="+Inf"}} {total}',
                      f'unolearn_request_duration_seconds_sum{{path="{path}"}} {self.sums[path]:.6f}',
                      f'unolearn_request_duration_seconds_count{{path="{path}"}} {total}']
        lines += _counter("unolearn_upstream_errors_total", "Failed upstream calls by kind.", "kind",
                          self.upstream_errors)
        lines += _counter("unolearn_feedback_total", "Feedback stored, by action (none: text only).", "action",
                          self.feedback)
        lines += ["# HELP unolearn_write_queue_depth Served rows and feedback waiting to be written.",
                  "# TYPE unolearn_write_queue_depth gauge", f"unolearn_write_queue_depth {queue_depth}"]
        plan_id, age, reloads = plan
        lines += ["# HELP unolearn_plan_id The published plan served (-1: none yet).",
                  "# TYPE unolearn_plan_id gauge", f"unolearn_plan_id {-1 if plan_id is None else plan_id}",
                  "# HELP unolearn_plan_age_seconds Seconds since the plan served was published (-1: none).",
                  "# TYPE unolearn_plan_age_seconds gauge",
                  f"unolearn_plan_age_seconds {-1 if age is None else round(age, 1)}",
                  "# HELP unolearn_plan_reloads_total Newer plans swapped in while serving.",
                  "# TYPE unolearn_plan_reloads_total counter", f"unolearn_plan_reloads_total {reloads}"]
        return "\n".join(lines) + "\n"


def _counter(name: str, help_: str, label: str, values: Counter[str]) -> list[str]:
    return [f"# HELP {name} {help_}", f"# TYPE {name} counter",
            *(f'{name}{{{label}="{k}"}} {n}' for k, n in sorted(values.items()))]
