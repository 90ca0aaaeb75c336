"""Worked examples for the distil stage's prompts, written for unolearn in English and Chinese.

A 0.5B model follows an example far better than an instruction (docs/embedded-model.md): shown how a
complaint becomes a rule and how thanks or a new question become no rule, it copies the pattern.
Each example is one (input, output) turn pair placed before the real input; the inputs use the same
headings as the real ones (``PROMPTS[lang]["feedback_input"]`` / ``["prior_input"]`` in
:mod:`unolearn.distill`), the outputs are the JSON the schema asks for.
"""

from __future__ import annotations

import json
from typing import Any

#: (query, first answer, what the user said afterwards, rules) per language.
FEEDBACK: dict[str, list[tuple[str, str, str, list[str]]]] = {
    "en": [
        ("What is the boiling point of water at high altitude?",
         "Water boils at a lower temperature at high altitude because the air pressure is lower. At 3,000 m it "
         "boils at about 90 °C, which is why pasta takes longer to cook in the mountains, and pressure cookers "
         "are popular there. The exact value depends on the weather as well as on the height.",
         "1. Way too long. I only wanted the number.",
         ["Give the number first and keep the answer to one or two sentences."]),
        ("Explain what a bond yield is.",
         "A bond yield is the yearly return an investor earns on a bond, as a share of its price.",
         "1. thanks, that helps! what's a coupon then?",
         []),
        ("Is a verbal contract binding?",
         "Yes, in many cases a verbal contract is binding, although it can be hard to prove.",
         "1. Which law says so? I need the article.",
         ["Name the law and the article that support the answer."]),
    ],
    "zh": [
        ("什么是定金？",
         "定金是合同当事人为了确保合同履行，由一方预先支付给另一方的一定数额的金钱。定金与预付款不同，"
         "它具有担保作用：给付定金的一方不履行约定的债务的，无权请求返还定金；收受定金的一方不履行的，"
         "应当双倍返还定金。实践中，定金的数额由当事人约定，但不得超过主合同标的额的百分之二十。",
         "1. 太啰嗦了，两三句话说清楚就行。",
         ["用两三句话简洁地回答。"]),
        ("房屋租赁合同可以口头订立吗？",
         "可以。租赁期限六个月以上的，应当采用书面形式；未采用书面形式的，视为不定期租赁。",
         "1. 谢谢！那押金一般交多少？",
         []),
        ("借款没有约定利息，出借人能要利息吗？",
         "一般不能，借款合同对支付利息没有约定的，视为没有利息。",
         "1. 没有法律依据，请引用具体条文。",
         ["引用具体的法律条文作为回答的依据。"]),
    ],
}

#: (query, rules) per language: what the model infers from a request alone.
PRIOR: dict[str, list[tuple[str, list[str]]]] = {
    "en": [("Write a short poem about autumn for my daughter's class.",
            ["Keep the poem short, a few lines.", "Use simple words a child understands.",
             "Describe autumn images such as falling leaves."])],
    "zh": [("房东提前解约需要赔偿吗？",
            ["先直接回答是否需要赔偿。", "说明相关的法律依据。", "解释赔偿的一般计算方式。"])],
}

#: (query, first answer, what the user said afterwards, does it ask for a change?) per language.
GATE: dict[str, list[tuple[str, str, str, bool]]] = {
    "en": [
        ("How do I reset my router?", "Hold the reset button for 10 seconds, then wait for the lights to settle.",
         "1. That didn't work, and you didn't say where the button is.", True),
        ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet around 1600.",
         "1. Great, thanks! And when was Macbeth written?", False),
    ],
    "zh": [
        ("离婚后孩子的抚养权怎么确定？", "一般由双方协商，协商不成的由法院根据子女利益判决。",
         "1. 说得太笼统了，请具体说明法院考虑哪些因素。", True),
        ("公司拖欠工资怎么办？", "可以先与公司协商，协商不成可以向劳动监察部门投诉或申请劳动仲裁。",
         "1. 好的，谢谢你。", False),
    ],
}


def feedback_turns(lang: str, template: str) -> list[dict[str, Any]]:
    """The feedback examples of ``lang`` as user/assistant turns (inputs formatted with ``template``)."""
    turns: list[dict[str, Any]] = []
    for query, answer, feedback, rules in FEEDBACK[lang]:
        turns.append({"role": "user", "content": template.format(query=query, answer=answer, feedback=feedback)})
        turns.append({"role": "assistant", "content": json.dumps({"rules": rules}, ensure_ascii=False)})
    return turns


def prior_turns(lang: str, template: str) -> list[dict[str, Any]]:
    """The prior-rule examples of ``lang`` as user/assistant turns."""
    return [turn for query, rules in PRIOR[lang] for turn in (
        {"role": "user", "content": template.format(query=query)},
        {"role": "assistant", "content": json.dumps({"rules": rules}, ensure_ascii=False)})]


def gate_turns(lang: str, template: str) -> list[dict[str, Any]]:
    """The gate's examples of ``lang`` as user/assistant turns answering yes or no."""
    return [turn for query, answer, feedback, change in GATE[lang] for turn in (
        {"role": "user", "content": template.format(query=query, answer=answer, feedback=feedback)},
        {"role": "assistant", "content": "yes" if change else "no"})]
