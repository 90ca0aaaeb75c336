"""Personal data redaction: every text is redacted before it enters the workspace.

Why here, and before storage: unolearn turns one user's words into rules, pairs, adapters and other users'
prompts. A text that is never stored raw can never leak through any of them, be kept in a cache, or survive
a deletion; so ingest and the proxy's recorder redact each log, rejected record, served answer and feedback
before the store sees it (the upstream model still answers the user's own words: answering a person with their
own data is not the leak, learning it is).

Contract:
- The detector is Microsoft Presidio (presidio-analyzer's recognizers and engine, presidio-anonymizer's
  replacement), run offline: no NLP model (its ``NoOpNlpEngine``; names are therefore not detected: no
  package ships an NER model with clear provenance), the public-suffix list from tldextract's bundled
  snapshot, never fetched.
- Presidio's recognizers are written for English text (``\\b`` word boundaries). Each text is analysed in a
  *view* of the same length in which CJK characters are spaces and full-width forms are their ASCII twins, so
  ``电话13812345678`` and ``１３８…`` are found; the replacement is made on the original at the same offsets.
- Added recognizers: Chinese mobile numbers, the 18-digit resident ID (check digit verified), credentials in a
  URL's query (``?token=…``) and percent-encoded e-mail addresses. URLs themselves are not personal data and are
  kept; an e-mail address or credential inside one is redacted.
- Placeholders are typed and numbered per record: ``<EMAIL_1>``, ``<PHONE_2>``; one value (compared without
  spaces, dashes and case) gets one placeholder throughout the record, so rules stay readable.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from .config import opt
from .errors import ConfigError
from .records import Action, Log, Message, Rejected

#: The kinds redacted by default (Presidio entity names; the last two are ours).
DEFAULT_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "CN_RESIDENT_ID",
                    "IP_ADDRESS", "URL_CREDENTIAL")
#: Each kind's placeholder label.
LABELS = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CARD", "IBAN_CODE": "IBAN",
          "US_SSN": "SSN", "CN_RESIDENT_ID": "CN_ID", "IP_ADDRESS": "IP", "URL_CREDENTIAL": "SECRET"}
#: Regions whose national phone formats are recognised (any region's number written with +country code is).
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "CN", "CA", "BR", "AU", "JP")
#: A run of characters that may be a phone number; the phone library only looks at such runs (it is slow).
_PHONE_CANDIDATE = re.compile(r"[+(]?\d[\d ().\-/]{5,24}\d")
#: Texts without any of these hold no identifier of the default kinds (an IPv6 address may have no digit).
_MAY_HOLD = re.compile(r"[0-9@=０-９＠]|[0-9A-Fa-f]:[0-9A-Fa-f]*:")
#: Characters that separate the groups of a number, left out when two values are compared.
_SEPARATORS = re.compile(r"[\s().+\-/]")
_CJK = re.compile(r"[\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
                  r"\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\U00020000-\U0003134f]")
_FULLWIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}


@dataclass
class RedactConfig:
    """What is redacted before anything is stored (config.yaml ``redact:``)."""

    enabled: bool = opt(True, "Redact personal data in every text before it is stored (ingest, the proxy's "
                              "recorder). false keeps raw text; ingest and serve then warn once on stderr.")
    entities: list[str] = opt(list(DEFAULT_ENTITIES), "The kinds redacted: " + ", ".join(DEFAULT_ENTITIES) + ".")
    threshold: float = opt(0.4, "Least detector score redacted (0.4 keeps every default kind: a phone number "
                                "without context scores 0.4).")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.entities) - set(DEFAULT_ENTITIES))
        if unknown:
            raise ConfigError(f"redact.entities: unknown kind {unknown[0]!r} (known: {', '.join(DEFAULT_ENTITIES)})")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError("redact.threshold must be between 0 and 1")


def analysis_view(text: str) -> str:
    """``text`` as the recognizers see it: same length, CJK characters as spaces, full-width forms as ASCII."""
    return _CJK.sub(" ", text).translate(_FULLWIDTH)


def resident_id_valid(digits: str) -> bool:
    """Whether an 18-character Chinese resident ID has the right check digit (ISO 7064 MOD 11-2)."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    if len(digits) != 18 or not digits[:17].isdigit():
        return False
    check = "10X98765432"[sum(int(d) * w for d, w in zip(digits, weights)) % 11]
    return digits[17].upper() == check


class Placeholders:
    """Typed, numbered placeholders for one record: the same value always gets the same one."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], str] = {}
        self.counts: dict[str, int] = {}

    def __call__(self, entity: str, value: str) -> str:
        """The placeholder of ``value`` (a detected ``entity``)."""
        label = LABELS[entity]
        key = (label, _same_value(entity, value))
        if key not in self.seen:
            self.counts[label] = self.counts.get(label, 0) + 1
            self.seen[key] = f"<{label}_{self.counts[label]}>"
        return self.seen[key]


def _same_value(entity: str, value: str) -> str:
    """What two detected values must share to be the same: numbers without their separators, an IP address
    in its canonical form, anything else without case."""
    if entity == "IP_ADDRESS":
        try:
            return str(ipaddress.ip_interface(value.strip()))
        except ValueError:
            return value.lower()
    if entity in ("EMAIL_ADDRESS", "URL_CREDENTIAL"):
        return value.lower()
    return _SEPARATORS.sub("", value).lower()


class Redactor:
    """Redacts texts, logs, rejected records and proxy rows, numbering placeholders per record."""

    def __init__(self, cfg: RedactConfig | None = None) -> None:
        self.cfg = cfg or RedactConfig()
        self._analyzer = _analyzer(tuple(sorted(self.cfg.entities))) if self.cfg.enabled else None

    def text(self, text: str, names: Placeholders | None = None) -> str:
        """``text`` with each detected identifier replaced by its placeholder."""
        if self._analyzer is None or not text or not _MAY_HOLD.search(text):
            return text
        names = names if names is not None else Placeholders()
        found = self._analyzer.analyze(analysis_view(text), language="en", entities=self.cfg.entities,
                                       score_threshold=self.cfg.threshold)
        spans = _without_overlaps([r for r in found if not _splits_cjk(text, r)])
        if not spans:
            return text
        return _replace(text, spans, names)

    def log(self, log: Log) -> Log:
        """``log`` with every text redacted (one numbering for the whole log)."""
        if self._analyzer is None:
            return log
        n = Placeholders()
        red = lambda t: self.text(t, n)  # noqa: E731
        return log.model_copy(update={
            "messages": tuple(Message(role=m.role, content=red(m.content)) for m in log.messages),
            "query": red(log.query),
            "first_answer": None if log.first_answer is None else red(log.first_answer),
            "feedback": tuple(red(f) for f in log.feedback),
            "actions": tuple(Action(kind=a.kind, turn=a.turn, edited=None if a.edited is None else red(a.edited))
                             for a in log.actions),
            "source": red(log.source), "metadata": _map_strings(log.metadata, red)})

    def rejected(self, r: Rejected) -> Rejected:
        """A rejected input record with its raw text and reason redacted."""
        if self._analyzer is None:
            return r
        n = Placeholders()
        return r.model_copy(update={"raw": self.text(_unescaped(r.raw), n), "reason": self.text(r.reason, n)})

    def served_row(self, row: tuple) -> tuple:
        """A proxy row ``(response id, messages JSON, answer, route, model, created at, user)``, redacted."""
        if self._analyzer is None:
            return row
        n = Placeholders()
        messages = json.dumps(_map_strings(json.loads(row[1]), lambda t: self.text(t, n)), ensure_ascii=False)
        return (row[0], messages, self.text(row[2], n), *row[3:])

    def feedback_row(self, row: tuple) -> tuple:
        """A proxy feedback row ``(response id, text, action, edited, created at, uid)``, redacted."""
        if self._analyzer is None:
            return row
        n = Placeholders()
        return (row[0], row[1] and self.text(row[1], n), row[2], row[3] and self.text(row[3], n), *row[4:])


def warn_if_disabled(cfg: RedactConfig, where: str) -> None:
    """Say once on stderr that ``where`` stores raw text (``redact: {enabled: false}``)."""
    if not cfg.enabled:
        print(f"warning: {where}: redaction is off (redact.enabled: false): personal data is stored as written",
              file=sys.stderr)


def _unescaped(raw: str) -> str:
    """A raw JSON record with its ``\\uXXXX`` escapes decoded (``json.dumps``' default writes every non-ASCII
    character so, and ``\\u7535\\u8bdd13812345678`` hides the number from the recognizers), else as it is."""
    if "\\u" not in raw:
        return raw
    try:
        text = json.dumps(json.loads(raw), ensure_ascii=False)
        text.encode("utf-8")  # a lone surrogate stays escaped
    except (ValueError, RecursionError):
        return raw
    return text


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` (JSON-like) with ``fn`` applied to every string in it, keys too; a number that ``fn`` changes
    written as text (``4111111111111111``, a card number as a JSON number, becomes ``<CARD_1>``)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out[_free_key(fn(str(k)), out)] = _map_strings(v, fn)
        return out
    if isinstance(value, (list, tuple)):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = str(value)
        redacted = fn(text)
        return value if redacted == text else redacted
    return value


def _free_key(key: str, taken: dict[str, Any]) -> str:
    """``key``, or ``key (2)``, ``key (3)``… when taken: two keys that redact alike (``Bob@x.com`` and
    ``bob@x.com`` both become ``<EMAIL_1>``) keep both their values."""
    return key if key not in taken else next(f"{key} ({n})" for n in itertools.count(2) if f"{key} ({n})" not in taken)


def _splits_cjk(text: str, r: Any) -> bool:
    """A phone number whose span holds a CJK character: digits that 年, 月 or 至 kept apart in the original,
    joined only in the analysis view (``2015年5月至2016年3月``). No real number has one inside."""
    return r.entity_type == "PHONE_NUMBER" and bool(_CJK.search(text, r.start, r.end))


def _without_overlaps(found: list[Any]) -> list[Any]:
    """The detections in text order, an overlapping one kept only when it scores higher (then longer)."""
    kept: list[Any] = []
    for r in sorted(found, key=lambda r: (-r.score, -(r.end - r.start), r.start)):
        if all(r.end <= k.start or r.start >= k.end for k in kept):
            kept.append(r)
    return sorted(kept, key=lambda r: r.start)


def _replace(text: str, spans: list[Any], names: Placeholders) -> str:
    """``text`` with each span replaced by its placeholder (numbered in text order), by presidio-anonymizer."""
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    chosen = {text[r.start:r.end]: names(r.entity_type, text[r.start:r.end]) for r in spans}  # value → placeholder
    results = [RecognizerResult(r.entity_type, r.start, r.end, r.score) for r in spans]
    operators = {r.entity_type: OperatorConfig("custom", {"lambda": chosen.__getitem__}) for r in spans}
    return _anonymizer().anonymize(text, results, operators, merge_entities_with_spaces=False).text


@cache
def _anonymizer() -> Any:
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


@cache
def _analyzer(entities: tuple[str, ...]) -> Any:
    """A Presidio analyzer with the recognizers of ``entities``, offline (built once per set of kinds)."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    registry = RecognizerRegistry(supported_languages=["en"])
    for entity in entities:
        for make in _recognizers()[entity]:
            registry.add_recognizer(make())
    engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


def _recognizers() -> dict[str, list[Callable[[], Any]]]:
    """Per kind, the makers of its recognizers (Presidio's, or ours where it lacks one)."""
    from presidio_analyzer.predefined_recognizers import IbanRecognizer, IpRecognizer, UsSsnRecognizer

    return {"EMAIL_ADDRESS": [_email_recognizer, _encoded_email_recognizer],
            "PHONE_NUMBER": [_phone_recognizer, _cn_mobile_recognizer],
            "CREDIT_CARD": [_card_recognizer], "IBAN_CODE": [IbanRecognizer], "US_SSN": [UsSsnRecognizer],
            "CN_RESIDENT_ID": [_cn_id_recognizer], "IP_ADDRESS": [IpRecognizer],
            "URL_CREDENTIAL": [_url_credential_recognizer]}


@cache
def _tld_extract() -> Any:
    """tldextract on its bundled public-suffix snapshot: never fetched, nothing cached on disk."""
    import tldextract

    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


def _email_recognizer() -> Any:
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail recognizer, its domain checked against the bundled suffix list."""

        def validate_result(self, pattern_text: str) -> bool:
            return _tld_extract()(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


def _encoded_email_recognizer() -> Any:
    from presidio_analyzer import Pattern, PatternRecognizer

    return PatternRecognizer(supported_entity="EMAIL_ADDRESS", name="EncodedEmailRecognizer", patterns=[
        Pattern("percent-encoded e-mail", r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._+\-]+%40[A-Za-z0-9\-]+"
                                          r"(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9])", 0.9)])


def _card_recognizer() -> Any:
    """Presidio's card recognizer (Luhn-checked), with the Mastercard 2221–2720 range its patterns lack."""
    from presidio_analyzer import Pattern
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer

    two_series = Pattern("Mastercard 2-series", r"\b2(?:2[2-9][0-9]|[3-6][0-9][0-9]|7[01][0-9]|720)[- ]?[0-9]{4}"
                                                r"[- ]?[0-9]{4}[- ]?[0-9]{4}\b", 0.3)
    return CreditCardRecognizer(patterns=[*CreditCardRecognizer.PATTERNS, two_series])


def _phone_recognizer() -> Any:
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    class WindowedPhoneRecognizer(PhoneRecognizer):
        """Presidio's phone recognizer (Google's libphonenumber matcher), run only on digit runs that may be
        phone numbers (seven digits or more), with their surroundings: the same findings, many times faster."""

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            out = []
            for m in _PHONE_CANDIDATE.finditer(text):  # with what the matcher looks at around a number
                if sum(c.isdigit() for c in m.group()) < 7:
                    continue
                start, end = max(m.start() - 8, 0), min(m.end() + 8, len(text))
                for r in super().analyze(text[start:end], entities, nlp_artifacts):
                    r.start, r.end = r.start + start, r.end + start
                    out.append(r)
            return out

    return WindowedPhoneRecognizer(supported_regions=PHONE_REGIONS)


def _cn_mobile_recognizer() -> Any:
    from presidio_analyzer import Pattern, PatternRecognizer

    return PatternRecognizer(supported_entity="PHONE_NUMBER", name="ChineseMobileRecognizer", patterns=[
        Pattern("CN mobile", r"(?<![0-9A-Za-z+])(?:(?:\+|00)86[ \-]?)?1[3-9][0-9](?:[ \-]?[0-9]{4}){2}(?![0-9])",
                0.7)])


def _cn_id_recognizer() -> Any:
    from presidio_analyzer import Pattern, PatternRecognizer

    class ChineseResidentIdRecognizer(PatternRecognizer):
        """The 18-character resident ID: region, birth date, sequence, check digit (verified)."""

        def validate_result(self, pattern_text: str) -> bool:
            return resident_id_valid(pattern_text)

    return ChineseResidentIdRecognizer(supported_entity="CN_RESIDENT_ID", patterns=[
        Pattern("CN resident ID", r"(?<![0-9A-Za-z])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])"
                                  r"(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx](?![0-9A-Za-z])", 0.5)])


def _url_credential_recognizer() -> Any:
    from presidio_analyzer import Pattern, PatternRecognizer

    names = ("access_token|refresh_token|id_token|token|api_key|apikey|key|auth|authorization|sig|signature|"
             "session|sessionid|session_id|sid|password|passwd|pwd|secret|client_secret|code|otp")
    return PatternRecognizer(supported_entity="URL_CREDENTIAL", name="UrlCredentialRecognizer", patterns=[
        Pattern("credential in a URL query", rf"(?<=[?&;#](?:{names})=)[^&#\s\"'<>]{{4,}}", 0.9)])
