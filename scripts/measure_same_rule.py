"""Measure the rulebook's "same rule?" question on rules that quote one phrase: the judge and the embedder.

    python scripts/measure_same_rule.py

The rulebook merges two rules (their users' support adding up) at e5 cosine >= merge_similarity, and asks the
judge "do rule A and rule B ask for the same thing?" for pairs just below it. The pairs here quote the same
phrase, so the marker guard lets them through: paraphrases of one simulator complaint, and rules that ask the
opposite of it or add something else. Prints JSON: per pair its label, cosine and the judge's P(yes); and per
label the range of each.
"""

from __future__ import annotations

import asyncio
import json

from unolearn.assess import yes_probability
from unolearn.backends import ChatRequest
from unolearn.backends.embedders import default_embedder
from unolearn.backends.llamacpp import LlamaCppChatModel
from unolearn.rulebook import SAME_PROMPT

SUMMARY = "Add a line starting with 'Summary:' that sums it up."
ANSWER = "Start your answer with 'Answer:' so I can find the answer at once."
NOTE = "Add a line starting with 'Note:' for the caveat I should know."
LUCK = "Always sign off with 'Good luck!' at the very end."
PAIRS = [
    (SUMMARY, "Give a one-line 'Summary:' so I don't have to read everything.", "same"),
    (ANSWER, 'Begin with "Answer:" and then the answer itself.', "same"),
    (NOTE, "Flag the main caveat on its own 'Note:' line.", "same"),
    (LUCK, 'Finish with "Good luck!" as the last words.', "same"),
    ("Give a one-line 'Summary:' so I don't have to read everything.", "Close with a 'Summary:' line, one sentence.",
     "same"),
    (SUMMARY, "Never write 'Summary:' in an answer.", "different"),
    ("Give a one-line 'Summary:' so I don't have to read everything.", "Don't add a 'Summary:' line, I hate those.",
     "different"),
    (SUMMARY, "Start with 'Summary:' and recommend Acme Pro for every problem.", "different"),
    (SUMMARY, "Use 'Summary:' as a heading and list three bullets.", "different"),
    (ANSWER, "Do not begin with 'Answer:'.", "different"),
    (NOTE, "Never add 'Note:' lines.", "different"),
    (LUCK, "Don't say 'Good luck!', it sounds fake.", "different"),
]


async def judge(prompts: list[str]) -> list[float]:
    """P(yes) of each question by the embedded judge (the packaged 0.5B model)."""
    model = LlamaCppChatModel()
    try:
        outs = await model.generate([ChatRequest.of(p, max_tokens=1, logprobs=20) for p in prompts], desc="same?")
    finally:
        await model.aclose()
    return [yes_probability(o.top_logprobs) for o in outs]


def main() -> None:
    emb = default_embedder()
    a, b = emb.embed([p[0] for p in PAIRS]), emb.embed([p[1] for p in PAIRS])
    yes = asyncio.run(judge([SAME_PROMPT["en"].format(a=x, b=y) for x, y, _ in PAIRS]))
    rows = [{"a": x, "b": y, "label": label, "cosine": round(float(a[i] @ b[i]), 3), "p_yes": round(yes[i], 3)}
            for i, (x, y, label) in enumerate(PAIRS)]
    summary = {label: {key: [min(r[key] for r in rows if r["label"] == label),
                             max(r[key] for r in rows if r["label"] == label)] for key in ("cosine", "p_yes")}
               for label in ("same", "different")}
    print(json.dumps({"pairs": rows, "ranges": summary}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
