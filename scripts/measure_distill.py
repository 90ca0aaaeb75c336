"""Measure the distil stage's feedback rules on a labelled sample, before and after its small-model aids.

The sample: the real ShareGPT conversations of scripts/data/sharegpt_sample.jsonl (labelled by hand:
does the user's second turn ask for the first answer to change?) and, optionally, simulated
MemoryBench logs (a follow-up asks for a change unless it is the simulator's thanks or off-topic
question). Each log is cut to (query, first answer, the user's next turn).

Configurations: ``before`` (no worked examples, no gate, no filter: the prompts as they were) and
``after`` (examples, the gate, the filter; the rules are asked for every log, so the figures without
the gate — the default — are read off the same rows). For each log and configuration it writes the gate's
P(asks for a change), the raw rules and the kept rules to OUT (JSONL, to be read and judged by hand),
and prints per configuration: how often the rules are empty for logs that ask for a change and for
logs that do not, and how many rules the filter dropped and why.

Usage: python scripts/measure_distill.py OUT.jsonl [SIMULATED_LOGS.jsonl [N]] [--only after] [--no-sharegpt]
(docs/embedded-model.md; ``--only after`` with ``--no-sharegpt`` compares two versions of the worked
examples on simulated logs alone)
"""
from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from pathlib import Path

from unolearn.assess import yes_probability
from unolearn.backends.llamacpp import LlamaCppChatModel
from unolearn.distill import DistillConfig, clean_rules, feedback_request, gate_request
from unolearn.errors import SchemaError
from unolearn.readers import from_memorybench
from unolearn.records import Log, Message
from unolearn.rulefilter import feedback_rules, filter_rules
from unolearn.simulate import OFF_TOPIC, THANKS

DATA = Path(__file__).parent / "data"
NOT_A_CHANGE = {t for texts in (*THANKS.values(), *OFF_TOPIC.values()) for t in texts}


def sharegpt_sample() -> list[tuple[str, Log, bool]]:
    out = []
    for line in (DATA / "sharegpt_sample.jsonl").open(encoding="utf-8"):
        rec = json.loads(line)
        turns = rec["conversations"][:3]
        msgs = [Message(role="user" if t["from"] == "human" else "assistant", content=t["value"]) for t in turns]
        name = rec["id"] or rec["source"].rsplit("#", 1)[-1]
        out.append((f"sharegpt:{name}", Log.from_messages(msgs), rec["asks_change"]))
    return out


def simulated_sample(path: Path, n: int) -> list[tuple[str, Log, bool]]:
    out = []
    for line in path.open(encoding="utf-8"):
        log = from_memorybench(json.loads(line), "simulated")
        if len(log.messages) >= 3 and log.messages[2].role == "user":
            follow = log.messages[2].content
            out.append((f"simulated:{log.id[:8]}", Log.from_messages(log.messages[:3]), follow not in NOT_A_CHANGE))
    return out[:n]


async def measure(model, sample, cfg: DistillConfig) -> list[dict]:
    gates = await model.generate([gate_request(log, cfg) for _, log, _ in sample], progress=False)
    rules = await model.generate([feedback_request(log, cfg) for _, log, _ in sample], progress=False)
    rows = []
    for (name, log, label), g, r in zip(sample, gates, rules):
        raw = clean_rules(r.parsed) if r.ok else []
        unreadable = isinstance(r.error, SchemaError)  # as distil: the user's own sentences then
        kept, rejected, source = feedback_rules(raw, log, unreadable) if cfg.examples else (*filter_rules(
            raw, log.lang, log.query, log.first_answer), "model")
        rows.append({"log": name, "asks_change": label, "p_change": round(yes_probability(g.top_logprobs), 3)
                     if g.ok and g.top_logprobs else None, "follow_up": log.messages[2].content[:300],
                     "raw": raw, "kept": kept, "rejected": dict(rejected), "echoed": source == "echo",
                     "recalled": source == "recall"})
    return rows


def summary(rows: list[dict], gate: bool, threshold: float) -> dict:
    def empty(r):
        gated = gate and r["p_change"] is not None and r["p_change"] < threshold
        return gated or not (r["kept"] if gate else r["raw"])
    yes, no = [r for r in rows if r["asks_change"]], [r for r in rows if not r["asks_change"]]
    return {"asks_change": len(yes), "asks_no_change": len(no),
            "rules_for_change": sum(not empty(r) for r in yes), "no_rules_for_no_change": sum(empty(r) for r in no),
            "gate_right": sum((r["p_change"] >= threshold) == r["asks_change"] for r in rows
                              if r["p_change"] is not None),
            "dropped": dict(sum((Counter(r["rejected"]) for r in rows), Counter())),
            "echoed": sum(r.get("echoed", False) for r in rows),
            "recalled": sum(r.get("recalled", False) for r in rows)}


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    args.add_argument("out", type=Path)
    args.add_argument("simulated", type=Path, nargs="?")
    args.add_argument("n", type=int, nargs="?", default=30)
    args.add_argument("--only", choices=["before", "after"])
    args.add_argument("--no-sharegpt", action="store_true")
    a = args.parse_args()
    sample = [] if a.no_sharegpt else sharegpt_sample()
    if a.simulated:
        sample += simulated_sample(a.simulated, a.n)
    model = LlamaCppChatModel()
    report = {}
    configs = (("before", DistillConfig(examples=False)), ("after", DistillConfig(gate=True)))
    with a.out.open("w", encoding="utf-8") as f:
        for name, cfg in [c for c in configs if a.only in (None, c[0])]:
            rows = asyncio.run(measure(model, sample, cfg))
            for r in rows:
                f.write(json.dumps({"config": name, **r}, ensure_ascii=False) + "\n")
            report[name] = summary(rows, cfg.gate, cfg.gate_threshold)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
