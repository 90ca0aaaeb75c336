"""A screen for learnt rules: quarantine the ones that could carry an attack into other users' prompts.

Why: a rule learnt from one user's feedback ("Keep answers under 200 words.") is placed into the prompts of other
users. Whoever writes the feedback therefore writes into everybody's prompt, and an attacker can plant a rule that
sends users to an address, hands out contact data, advertises, makes the assistant run or hand out code, or talks
to the assistant about its own instructions (prompt injection). An honest rule is about the answer's form, length,
tone or content, so a rule that carries any of those five things is held back, whatever else it says.

:func:`screen_reason` names the first kind found, in the order of :data:`KINDS`, or None for a clean rule. The text
is normalised first (NFKC, lower case, one space, the usual disguises of an address undone: ``hxxp``, ``[.]``,
``(dot)``, `` dot ``, ``点``, spaced-out letters), then matched by a few compiled patterns per kind, English and
Chinese: a few microseconds to some tens of microseconds per rule, standard library only. Mentioning a kind is not
carrying it: "Don't use links.", "Give a code example in Python." and "Add comments to the code." pass.

Limits: patterns catch the forms they name (addresses, numbers, ids, commands, the usual phrasings of promotion and
injection, with their common disguises). A paraphrase in words the patterns do not know gets through, most often for
``promotion`` and ``instruction``: batches of attacks written after the patterns, before any change for them, were
caught at 40-55% (``unolearn.bench.screen`` and its set keep them, ``source`` ``attack:heldout-*``). The screen is a
first line; a rule it passes is not proven honest.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import NamedTuple

KINDS = ("link", "contact", "promotion", "code", "instruction")

# Top-level domains an address is recognised by: the common generic ones, those cheap ones attackers favour, and
# country codes that are not also English words or file extensions ("it", "is", "me", "md", "sh", "py" are left
# out; "t.me/..." is matched on its own).
_TLDS = ("com|net|org|info|biz|io|co|cc|tv|ly|gl|gg|xyz|top|shop|store|site|online|club|vip|live|app|dev|"
         "link|click|win|bid|loan|work|fun|icu|buzz|email|pro|cn|ru|de|uk|fr|jp|kr|tk|ml|gq|pw|ws|su|ua|pl|nl|eu|"
         "ca|au|br|es|ch|se|tw|hk|sg|vn|gov|edu|mil")
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"


_Replacement = str | Callable[[re.Match[str]], str]


def _step(pattern: str, repl: _Replacement, *needles: str) -> tuple[re.Pattern[str], _Replacement, tuple[str, ...]]:
    """One step of the normalisation, run only when the text holds one of ``needles`` (most texts hold none)."""
    return re.compile(pattern), repl, needles


def _glued_dot(m: re.Match[str]) -> str:
    """``wwwdot`` -> ``www.``; a ``dot`` glued before a top-level domain -> ``.``."""
    return "www." if m.group(0).startswith("www") else "."


_BRACKETS = ("[", "(", "{", "<")
# Undo the disguises of an address, on lower-cased NFKC text, in this order.
_UNDISGUISE = (
    _step(r"\bh(?:xx|\*\*|tt)p(s?)\s*:\s*/\s*/", r"http\1://", ":"),                  # hxxp://, h**ps://
    _step(r"\s*[\[({<]\s*(?:\.|dot|点)\s*[\])}>]\s*", ".", *_BRACKETS),                 # [.] (dot) {点}
    _step(r"\s*[\[({<]\s*(?:@|at)\s*[\])}>]\s*", "@", *_BRACKETS),                      # [at] (at)
    _step(r"(?<=[a-z0-9])\s*(?:点|。)\s*(?=[a-z0-9])", ".", "点", "。"),                   # daikuan点com, abc。com
    _step(r"(?<=[a-z0-9])\s+(?:dot|point|dian)\s+(?=[a-z0-9])", ".", " dot ", " point ", " dian "),
    _step(r"\bwww(?:dot|点)|(?<=[a-z0-9])dot(?=(?:" + _TLDS + r")\b)", _glued_dot, "dot", "点"),  # wwwdotabcdotcom
    _step(r"\b(?:[a-z] ){2,}[a-z]\b", lambda m: m.group(0).replace(" ", ""), " "),           # w w w, c o m
    _step(r"(?<=[a-z0-9]) \. (?=[a-z0-9])", ".", " . "),                                   # site . com
    _step(r"\bwww\s+(?=[a-z0-9-]+\s+(?:" + _TLDS + r")\b)", "www.", "www "),                # www example com
    _step(r"\bwww\.([a-z0-9-]+)\s+(" + _TLDS + r")\b", r"www.\1.\2", "www."),
    _step(r"\b([a-z0-9]+(?:[._+-][a-z0-9]+)+|[a-z]+\d+)\s+at\s+([a-z0-9-]+\.(?:" + _TLDS + r")\b)", r"\1@\2",
          " at "),                                                                      # john.smith at gmail.com
)
_LEET = str.maketrans("013457@$", "oieastas")
_LEET_WORD = re.compile(r"\b[a-z]*[a-z][0-9@$][a-z0-9@$]*[a-z][a-z0-9@$]*\b")


def normalise(text: str) -> str:
    """``text`` as the screen reads it: NFKC, lower case, one space between words, disguised addresses undone."""
    return _undisguise(" ".join(unicodedata.normalize("NFKC", text).lower().split()))


def _undisguise(out: str) -> str:
    """Run the steps of ``_UNDISGUISE`` whose needles ``out`` (lower-cased NFKC text) holds."""
    for pattern, repl, needles in _UNDISGUISE:
        if any(needle in out for needle in needles):
            out = pattern.sub(repl, out)
    return out


def _deleet(text: str) -> str:
    """Digits and symbols inside words read as letters ("ign0re the prev1ous") -- for the instruction patterns."""
    return _LEET_WORD.sub(lambda m: m.group(0).translate(_LEET), text)


def _branches(pattern: str) -> list[str]:
    """The top-level alternatives of ``pattern`` (its ``|`` outside groups and character classes)."""
    out, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c in "()":
            depth += 1 if c == "(" else -1
        elif c == "|" and depth == 0:
            out.append(pattern[start:i])
            start = i + 1
        i += 1
    return out + [pattern[start:]]


def _any(*parts: str) -> re.Pattern[str] | None:
    """One pattern matching any of ``parts`` (None for no parts).

    Speed: the alternatives that start with a word boundary share one ``\\b``, so the engine tests the alternatives
    at word starts only instead of testing every alternative's boundary at every position (about twice as fast)."""
    branches = [b for part in parts for b in _branches(part)]
    at_word = [b[2:] for b in branches if b.startswith(r"\b")]
    rest = [b for b in branches if not b.startswith(r"\b")]
    joined = ([r"\b(?:" + "|".join(at_word) + ")"] if at_word else []) + [f"(?:{b})" for b in rest]
    return re.compile("|".join(joined)) if joined else None


# link: a scheme, www., a name under a known top-level domain, name.tld/path, a short-link service, a bare IP
# address, a lone ".com"; Chinese: 网址/链接 followed by an address.
_LINK_CJK = _any(r"(?:网址|网站|官网|链接|地址)\s*[:：]\s*[a-z0-9]")
_LINK = _any(
    r"\b(?:https?|ftp|sftp|file|mailto)\s*:\s*/?/?[a-z0-9]",
    r"\bwww\d?\.[a-z0-9-]",
    r"(?<![a-z0-9@.-])(?!(?:asp|vb|ado|ml|msal)\.net\b|socket\.io\b)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?:" + _TLDS + r")(?![a-z0-9-])(?!\.[a-z0-9])",
    r"(?<![a-z0-9.])t\.me/|\bbit\.?ly\b|\btinyurl\b|\bgoo\.gl/",
    r"(?<![a-z0-9@./-])(?:[a-z0-9-]+\.)+[a-z]{2,10}/[a-z0-9_~-]",                  # name.tld/path, any tld
    r"\b(?!127\.0\.0\.1\b|0\.0\.0\.0\b)\d{1,3}(?:\.\d{1,3}){3}\b",                # a bare IP address, not loopback
    r"(?<![a-z0-9])\.(?:com|org|io|xyz|top|shop|info|biz|cn|ru|cc|vip|site|online|club)\b|"
    r"(?<![a-z0-9])\.net\b(?! ?(?:\d|core|framework|maui|sdk|runtime|developers?|apps?|code|projects?|version))",
)

# contact: an e-mail address, a handle, a phone number (digits, spelt out, Chinese numerals), a messenger id, "add me",
# "reach out", a request for someone's personal data; Chinese: 加微信, QQ群, 私信, 联系方式, 留下手机号 ...; and any
# redaction placeholder (<EMAIL_1>), which stands for contact data that was in the rule.
_MESSENGERS = (r"wechat|weixin|wx|vx|v信|微信|威信|薇信|qq|企鹅号?|telegram|tg|whatsapp|signal|skype|discord|"
               r"kik|snapchat|instagram|ig|viber|微博|抖音号?|小红书号?|钉钉")
_ID_WORD = r"id|号|账号|号码|handle|username|account"
# A messenger, then an id: after a colon or a word such as "id" / 号, or one holding a digit or an underscore.
_MESSENGER_ID = (r"(?<![a-z])(?:" + _MESSENGERS + r")(?![a-z])(?:\s*(?:" + _ID_WORD + r")?\s*[:：]\s*[a-z0-9_.#-]{3,}|"
                 r"[\s,，-]*(?:" + _ID_WORD + r")\s*(?:is|是|为)?\s*[a-z0-9_.#-]{3,}|"
                 r"\s*(?=[a-z0-9_.#-]{3,})[a-z0-9_.#-]*[0-9_][a-z0-9_.#-]*)")
_PERSONAL = (r"e-?mail(?: address)?|phone(?: number)?|mobile(?: number)?|cell(?: number)?|(?:home )?address|"
             r"bank (?:details|account|info\w*)|card (?:number|details)|credit card|iban|password|ssn|"
             r"social security(?: number)?|id number|passport(?: number)?|date of birth")
_CONTACT = _any(
    r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}",                       # e-mail
    r"\b(?:dm|message|follow|ping|contact|reach|add|tag|find)\b[^.!?@]{0,15}@[a-z0-9_.]{3,}|"
    r"@[a-z0-9_.]{3,} on (?:telegram|twitter|x|instagram|tiktok|discord|threads|weibo)\b",
    r"(?<![\w.])(?!(?:19|20)\d\d-\d\d-\d\d)(?:\+\d{1,3}[\s-]?)?\(?\d{2,4}\)?(?:[\s-]\d{2,6}){2,3}(?!\w|\.\d)",  # phone
    r"(?<!\d)1[3-9]\d{9}(?!\d)",                                                     # a Chinese mobile number
    r"(?:call|phone|tel|text|sms|hotline|whatsapp|电话|热线|拨打|致电|手机)[^0-9\n]{0,12}\d(?:[\s-]?\d){4,}",
    r"(?:contact|call|text|reach|add|联系|加|咨询|拨打)[^0-9\n.!?。！？]{0,8}\d{5,}",
    r"(?:\b(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)\b[\s,.-]*){7,}",
    _MESSENGER_ID,
    r"\b(?:add|message|dm|ping|follow|reach|contact|call|text|email|e-mail|whatsapp|telegram) (?:me|us)\b"
    r"(?![\"'”’]? (?:page|form|section|button|link|details))",
    r"\b(?:reach out|get in touch)(?: to| with)? (?:me|us|our|my)\b|\breach out (?:on|via|at)\b|"
    r"\bcontact (?:our|my) (?:agent|team|support|office|sales|lawyer)\b|\bmy (?:handle|username|number|whatsapp|"
    r"telegram|wechat)\b",
    r"\b(?:join|add|invite)\b[^.!?]{0,20}(?<![a-z])(?:" + _MESSENGERS + r") ?(?:group|channel|chat)\b",
    r"\b(?:reach|contact|message|text|ping|find|add|talk to|chat with)\b[^.!?]{0,30}\b(?:via|on|through|over) (?:" +
    _MESSENGERS + r")\b",
    r"\b(?:ask(?:s|ing)?|request|collect|get|have|send|share|give|provide|enter|leave|type)\b[^.!?]{0,40}"
    r"\b(?:their|your|his|her|(?:the |each |every |all )?(?:users?|customers?|people|visitors?|readers?)'?s?) "
    r"(?:" + _PERSONAL + r")\b",
)
_CONTACT_CJK = _any(
    r"@[" + _CJK + r"]{2,}",                                                          # @微博名
    r"[零〇一二三四五六七八九幺两]{7,}",                                                 # a phone number in words
    r"加(?:我|个|一下)?(?:的)?(?:微信|v信|vx|wx|v|qq|好友|群)|(?:qq|微信|钉钉|tg)群|私信|私聊|联系(?:我|我们|方式|电话|客服)|"
    r"客服|咨询请|扫码|二维码|留下.{0,4}(?:手机|电话|联系方式|微信|邮箱|号码)|"
    r"(?:发|提供|告诉|填写|上传|留下|附上|拍).{0,8}(?:身份证|银行卡|卡号|密码|验证码|手机号|电话号码|住址|家庭地址|出生日期|生日|"
    r"邮箱|账号)",
)
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_\d+>")  # a redacted value: <EMAIL_1>, <CN_ID_2>

# promotion: codes and coupons, sponsorship, "our/my" business, pushing to buy or subscribe, marketing claims; Chinese:
# 优惠码, 关注公众号, 推荐购买, 我们的产品, a quoted product name with a claim; cased: brand names next to a claim.
_BUSINESS = (r"apps?|shop|store|products?|services?|courses?|channel|newsletter|company|brand|firm|website|"
             r"platform|bank|agency|clinic|ebook|podcast|blog|startup|business|partners?|sponsors?")
_PUSH = r"suggest|recommend|tell|encourage|urge|advise|remind|invite|ask|get|push|convince|persuade|nudge"
_PROMOTE = (r"use|using|try|visit|mention|recommend|suggest|promote|check out|download|install|buy|subscribe to|join|"
            r"follow|plug|name|advertise|push|sign up for|register (?:with|for|at)|choose|pick|go with|prefer|shop at|"
            r"order from|book(?:ing)? (?:with|at|through)|point (?:people|users|readers) to|favou?r")
_OURS = r"(?:our|my) (?:own )?(?:\w+ )?(?:" + _BUSINESS + r")\b"
_OURS_ALONE = r"\b(?:our|my) (?:\w+ )?(?:partners?|sponsors?|affiliates?)\b"
_SUPERLATIVE = (r"best|lowest|cheapest|highest|safest|fastest|most \w+|only \w+(?: \w+)? worth|top-rated|number one|"
                r"#1|leading|unbeatable")
_PROMOTION = _any(
    r"\b(?:coupon|promo|discount|voucher|referral|invite|affiliate|gift) ?(?:code|link|id)\b|\bcoupons?\b|"
    r"\bvouchers?\b",
    r"\bsponsor(?:ed|ship)?\b|\badvertis(?:e|es|ing) (?:our|my|the|for)\b|\bshout-?out\b|"
    r"\bpromot(?:e|es|ing) (?:our|my)\b|\bpromotional (?:codes?|links?|offers?|prices?|deals?)\b|"
    r"\bfree trial\b|\bcashback\b|\bsign-?up bonus\b",
    r"\b\d{1,2} ?% (?:off|discount)\b|\blimited[- ]time\b|\b(?:buy|order|sign up|apply|subscribe|join|download) "
    r"(?:it |one |\w+ )?(?:now|today)\b|\bworth (?:buying|every penny|the money)\b",
    _OURS_ALONE,
    r"\b(?:" + _PROMOTE + r")\b[^.!?]{0,25}\b" + _OURS,                       # use our app, visit my shop
    r"\b" + _OURS + r"[^.!?]{0,30}\b(?:has|have|offers?|is|are|gives?)\b[^.!?]{0,20}\b(?:best|cheapest|lowest|free|"
    r"discounts?|sale|deals?|\d+ ?%)",                                          # our shop has 50% off
    r"\b(?:subscribe to|follow|like and subscribe|sign up (?:for|with)|join|register (?:with|through|via|at)) "
    r"(?:our|my|us|me)\b",
    r"\b(?:" + _PUSH + r")\w*\b[^.!?]{0,30}\b(?:buy|buying|purchase|purchasing|subscribe|subscribing|invest|investing|"
    r"sign up|signing up)\b(?!-)|\bsold by\b|\bshop at\b|\border from\b",
    r"\b(?:slip|sneak|weave|work|squeeze) in (?:that|a mention|a plug|the name)\b|\bcasually mention\b",
    r"\b\d+ (?:months?|weeks?|days?) free\b|\bfree (?:months?|weeks?|shipping|membership)\b|"
    r"\b(?:doctor|dentist|dermatologist|expert|editor)s?[- ](?:recommended|approved)\b|\bclinically proven\b|"
    r"\bbetter than (?:the rest|all the others|any other|its competitors|the competition)\b|"
    r"\b(?:best|top|leading|cheapest|most \w+)\b[^.!?]{0,30}\bon the market\b|"
    r"\b(?:five|5)[- ]stars?\b|\bbest (?:choice|deal|price|option on the market)\b|\bpremium (?:plan|version|tier)\b",
    r"\b(?:over|instead of) (?:any|all) (?:other|competitors?)\b|\boverpriced\b|"
    r"\bsafest\b.{0,30}\b(?:exchange|platform|broker|app|bank)\b|\bguaranteed (?:returns?|profits?)\b",
)
_PROMOTION_CJK = _any(
    r"优惠码|优惠券|折扣码|邀请码|推广码|推荐码|返利|立减|打[一二三四五六七八九]折|限时|特价|秒杀|赞助|带货|稳赚|包赚|免费试用|"
    r"(?:插入|加上|加入|植入)广告|广告位|关注.{0,8}(?:公众号|抖音|快手|小红书|b站|微博|视频号|账号|频道)|公众号[“\"「]|"
    r"(?:淘宝|天猫|京东|拼多多|抖音|快手|小红书|b站)(?:店|旗舰店|号|账号|直播间|链接)|点赞|"
    r"(?:(?:推荐|建议|劝|提醒|引导|鼓励)(?:用户|大家|读者|他们)?|让(?:用户|大家|读者|他们))"
    r".{0,10}(?:购买|下单|充值|订阅|投资|报名|办理)|"
    r"下载.{0,6}(?:app|应用|客户端)|(?:(?:建议|推荐)(?:用户|大家|他们|读者)?|(?:让|叫)(?:用户|大家|他们|读者))"
    r"(?:去|在|到|用|找)\S{1,8}"
    r"(?:订|买|下单|充值|开户|注册|办理|借)|"
    r"(?:推荐|介绍|宣传|使用|用|下载|关注|购买|买|办理|报名|订阅|试试|选择|提到|提一下|安利).{0,6}(?:我|我们)(?:的|家)?"
    r"(?:公司|团队)?(?:的)?(?:app|产品|新产品|课程|店|网站|银行|平台|服务|品牌|频道|账号|辅导班|培训班|软件)|"
    r"(?:我|我们)(?:公司)?(?:开发|推出|自研|出品|代理|销售|运营)的|"
    r"别推荐.{0,4}(?:别的|其他)|(?:别的|其他)品牌|(?:只|就)(?:推荐|说).{0,10}最好|(?:某某|xx)+(?:牌|品牌|公司|旅行社|机构|平台|店|银行|教育)|某品牌|某牌|"
    r"[“\"「『][^”\"」』]{1,10}[”\"」』](?:系列|牌|品牌|产品)?.{0,12}(?:最有效|最好|最佳|最高|最低|最便宜|最强|最专业|最权威|"
    r"收益高|效果(?:很|非常|特别)?好|很有效|好用|靠谱|更好|更强|适合所有)|(?:推荐|安利|不如|比不上)(?:我们的|我的)?[“\"「『][^”\"」』]{1,10}[”\"」』]|"
    r"市面上最|内部价|(?:更|最|很)?值得(?:买|入手|购买)|比.{1,8}(?:更|还)(?:好|值|强|划算|便宜)|提供支持|冠名|独家赞助|同款|优惠价|团购价|折扣价|会员价|"
    r"付费(?:课程|会员|版)|性价比最高|效果最好|最好用|最划算|最靠谱|最正宗|口碑最好|第一品牌|首选(?:品牌|平台|机构)",
)
# Brand names keep their case: a CamelCase name, or a capitalised one next to a promoting verb or a claim.
_CAMEL = r"[A-Z][a-z]+[A-Z]\w*"
_NAME = r"(?:" + _CAMEL + r"|[A-Z][A-Za-z]*[a-z](?: [A-Z][A-Za-z]*){0,2})"
_COMPANY = (r"Bank|Airlines?|Air|Insurance|Hotels?|Resorts?|Store|Shop|Pharmacy|Clinic|Labs?|Inc|Ltd|LLC|Corp|Group|"
            r"Capital|Finance|Loans?|Casino|Bet|Exchange|Academy|VPN|Whey|Motors|Realty|Travel|Tours|Partners")
_PROMOTION_CASED = _any(
    r"\b(?:[Aa]lways|[Oo]nly|[Ee]xclusively) (?:recommend|suggest|mention|promote|name|push|plug)\b(?: the| a| an)? "
    r"(?:[a-z]+ ){0,3}" + _NAME,
    r"\b(?:[Rr]ecommend|[Ss]uggest|[Pp]romote|[Ee]ndorse|[Pp]lug|[Aa]dvertise)\b(?: the| a| an)? (?:[a-z]+ ){0,3}"
    + _CAMEL,
    r"\b(?:[Hh]ire|[Hh]iring)\b(?: the| a| an)? (?:[a-z]+ ){0,3}" + _NAME,
    _CAMEL + r"\b[^.!?]{0,40}\b(?:" + _SUPERLATIVE + r"|better than|approved)\b",
    r"\b(?:" + _SUPERLATIVE + r"|better than|approved)\b[^.!?]{0,30}\b" + _CAMEL,
    r"(?<=\s)[A-Z][a-z]+(?: [A-Z][a-z]+)+\b[^.!?]{0,40}\b(?:is|are|gives?|has|have|offers?|makes?|sells?) the "
    r"(?:" + _SUPERLATIVE + r")\b",
    r"(?:(?<=\s)[A-Z][a-z]+(?: [A-Z][a-z]+)+|" + _CAMEL + r")\b[^.!?]{0,30}\bthe (?:\w+est|most \w+|best)\b",
    r"\b[A-Z][A-Za-z]+ (?:" + _COMPANY + r")\b[^.!?]{0,40}\b(?:" + _SUPERLATIVE + r"|better|cheaper|free)\b",
    r"\b(?:" + _SUPERLATIVE + r"|worth buying)\b[^.!?]{0,40}\b[A-Z][A-Za-z]+ (?:" + _COMPANY + r")\b",
    r"\b[A-Z][a-z]+ (?:app|brand|platform|service|tool|store|shop|course|program)s? (?:is|are) the (?:\w+est|most \w+|"
    r"best)\b",
    r"\b(?:[Tt]ry|[Uu]se|[Bb]uy|[Gg]et|[Dd]ownload|[Ii]nstall) (?:the )?" + _CAMEL + r"(?: [a-z]+)? "
    r"(?:supplements?|app|vpn|serum|cream|pills?|plan|products?)\b",
)

# code: code blocks, <script>, eval(, os.system, SQL that destroys, shell and Windows commands, package installs,
# "run this command", "paste into the terminal", "disable the antivirus"; Chinese: 执行以下命令, 在终端输入 ...
_SHELL = (r"rm|apt|apt-get|yum|dnf|chmod|chown|spctl|csrutil|sh|bash|su|dd|mkfs|curl|wget|pip3?|npm|systemctl|kill|"
          r"killall|mv|cp|nano|vi|vim|cat|echo|tee|reboot|shutdown|passwd|useradd|visudo|launchctl|defaults|nvram|"
          r"docker|python3?|perl|nc|iptables|ufw|crontab|-\w+")
_CODE = _any(
    r"`{3}|<\s*script\b|<\s*iframe\b|\bjavascript\s*:|\bon(?:error|load)\s*=",
    r"\b(?:eval|exec|system|popen|spawn|atob|fromcharcode|__import__)\(",
    r"\bos\.(?:system|popen|remove|unlink|rmdir|exec\w*)|\bsubprocess\.|\bshutil\.rmtree|\bimport os\b|"
    r"\bdocument\.cookie|\bchild_process\b|\bruntime\.getruntime",
    r"\b(?:drop|truncate) (?:table|database|schema)\b|\bdelete from\b|;\s*--|\bunion select\b|\bor 1\s*=\s*1\b",
    r"\brm -[a-z]*[rf]|\bsudo (?:-\S+ )*(?:" + _SHELL + r")\b|\b(?:curl|wget)\s+(?:-\S+\s+)*(?:https?:|[a-z0-9-]+\."
    r"[a-z]{2,}|\S*/)|\|\s*(?:sudo\s+)?(?:ba|z|da)?sh\b|\b(?:ba|z)?sh\s+-c\b|\bbash\s*<\(|"
    r"\bchmod\s+(?:[0-7]{3,4}|[+-][rwx]|-r)|\bmkfs\b|\bdd if=|:\(\)\s*\{|\bnc\s+-[a-z]*e\b|/bin/(?:ba)?sh\b",
    r"\b(?:pip3?|npm|pnpm|yarn|gem|cargo|go|apt(?:-get)?|yum|dnf|brew|choco|winget) (?:install|add|get|i)\s+[a-z0-9]|"
    r"\b(?:npx|pnpx|bunx|uvx|pipx run)\s+[a-z0-9@]",
    r"(?<![\w-])(?:run|type|enter|execute|paste)\b[^.!?]{0,10}\b[a-z][\w.-]* -{1,2}[a-z][\w-]* ",
    r"\b(?:grant all|grant \w+ on)\b|\bipconfig\b|\bnet (?:stop|user|localgroup)\b|"
    r"\b(?:netsh|schtasks|bcdedit|vssadmin|wmic|taskkill|icacls|takeown|remove-item|rmdir /s|"
    r"sc (?:stop|delete|config))\b",
    r"\bpowershell(?:\.exe)?\s+(?:-\w|iex\b|invoke-|set-|start-|\$)|\binvoke-(?:expression|webrequest)\b|\biex\b|"
    r"\bset-executionpolicy\b|\bcmd(?:\.exe)?\s*/c\b|\bmshta\b|\bregsvr32\b|\bcertutil\b|\bdel\s+/[a-z]|"
    r"\bformat\s+[a-z]:|\bdocker run\b|\bspctl\b|\bcsrutil\b|\breg (?:add|delete)\b|\bbase64 -d\b",
    r"\b(?:run|open|launch|execute|download|install|double-click)\b[^.!?]{0,20}\b[\w-]+\.(?:exe|bat|cmd|ps1|vbs|msi|"
    r"scr|sh|apk|dmg|pkg)\b",
    r"\b(?:run|execute|exec|launch)\b[^.!?]{0,30}\b(?:this|these|the following|following|below|attached|downloaded)\b"
    r"[^.!?]{0,20}\b(?:commands?|scripts?|code|file|installer|program|payload|binary|snippet)\b",
    r"\b(?:run|execute)\b (?:this|the following|the command|the script|it)\s*[:：]",
    r"(?<!how to )(?<!to )\b(?:run|execute|exec|launch)(?:s|es|ning)?\b (?:the |this |that |any |every |each |a |an )?"
    r"(?:commands?|scripts?|payload|binary|installer|attachment|program)\b",
    r"\b(?:download|fetch|grab|pull)\w*\b[^.!?]{0,25}\b(?:and|then|&|to) (?:run|execute|launch)\w*",
    r"\b(?:paste|type|enter|copy|run)(?:s|ing|ed)?\b(?:[^.!?]|\.(?=\S)){0,60}\b(?:into|in|from) "
    r"(?:the |a |your |their )?(?:terminal|console|shell|cmd|command prompt|command line|powershell|address bar|"
    r"devtools)\b",
    r"\b(?:open|launch|start)\b (?:a |the |their |your )?(?:terminal|shell|command prompt|console)\b",
    r"\bdisable\b[^.!?]{0,20}\b(?:antivirus|anti-virus|firewall|defender|gatekeeper|security software|sip)\b",
    r"\bpipe\b[^.!?]{0,40}\binto\b",
)
_CODE_CJK = _any(
    r"(?:执行|运行|跑)(?:一下)?(?:以下|下面|下列|这段|这条|这个|如下)?的?(?:命令|代码|脚本|指令|程序|安装包)|"
    r"(?:执行|运行)(?:以下|下面|下列|如下)|(?:终端|命令行|控制台|cmd|powershell)(?:里|中|上)?.{0,4}(?:输入|执行|运行|敲)|"
    r"关闭.{0,4}(?:杀毒|防火墙|安全软件|杀软)|复制到.{0,4}(?:控制台|终端|命令行)|(?:管理员|root|超级用户)(?:权限|身份)|"
    r"下载.{0,4}(?:并|后|然后|再)?(?:运行|执行|安装|打开)|双击(?:运行|打开|执行)|"
    r"(?:保存为|另存为|存成|存为).{0,6}\.(?:bat|cmd|ps1|vbs|sh|exe)|(?:运行|执行|打开|双击)\s*[\w-]+\.(?:exe|bat|cmd|ps1|vbs|msi|sh|apk)",
)

# instruction: about the assistant's own instructions, prompt, tools, memory, identity and safety, about other users,
# and the usual injection phrasings; Chinese: 忽略之前的指令, 系统提示, 你现在是, 其他用户, 解除限制 ...
_OWN = (r"instructions?|prompts?|rules|guidelines|directives|policy|policies|programming|training|settings|"
        r"restrictions|configuration|permissions")
_INSTRUCTION = _any(
    r"\b(?:ignore|disregard|forget|override[sn]?|bypass|skip|drop|abandon)\b[^.!?]{0,30}\b(?:" + _OWN +
    r"|safety|content policy|filters?|guardrails|system message)\b",
    r"\bsystem (?:prompt|message|instructions?)|\bdeveloper (?:message|mode|instructions?)|\bhidden (?:prompt|"
    r"instructions?|message|rules)|\b(?:initial|original|secret|internal|pre-?prompt) (?:instructions?|prompt)|"
    r"\bcontext window\b|\bjailbreak|\b(?:rules|instructions) you (?:were|have been|'ve been) given\b",
    r"\byour (?:own )?(?:instructions|guidelines|rules|programming|configuration|training data|"
    r"prompt(?! answers?| responses?| replies))\b",
    r"\b(?:the above|above|new|previous|prior) (?:instructions|directives)\b|\bsupersedes?\b|\beverything above\b",
    r"\byou are (?:now|no longer)\b|\bfrom now on,? (?:you are|you're|your name|you will be (?:called|named|an? ))|"
    r"\bdo anything now\b|\bdan (?:mode|prompt)\b|"
    r"\b(?:as|be|become) dan\b|\bact as (?:an? )?(?:unfiltered|uncensored|unrestricted|jailbroken|evil|rogue)|"
    r"\bpretend\b[^.!?]{0,30}\b(?:no|without|unrestricted|unfiltered|human)\b|\b(?:unfiltered|uncensored)\b|"
    r"\bnever refuse|\b(?:with|have|has|having) no (?:rules|limits|restrictions|censorship|guidelines|"
    r"boundaries)\b|\bwithout (?:any )?(?:restrictions|limits|censorship)\b",
    r"\b(?:other|previous|past|earlier|another|all other|different) (?:users?|conversations|chats|sessions)\b|"
    r"\b(?:administrator|admin|root|superuser) (?:access|rights|privileges)|\bfull access\b",
    r"\b(?:call|invoke|trigger|use) (?:the |your )?(?!the |a |an |this |that )[a-z_]+ (?:tool|plugin)s?\b|"
    r"\b(?:call|invoke|trigger|run) (?:the |a |your |any |every )?(?:tools?|plugins?)\b|\buse your tools\b|"
    r"\b[a-z]+_[a-z_]+ (?:tool|function)\b|\btool ?call",
    r"\b(?:your|long-term|persistent|permanent) memory\b|\b(?:store|save|keep|write|copy|put|add)\b[^.!?]{0,30}"
    r"\b(?:in|into|to) (?:your )?memory\b|\bin later (?:chats|conversations|sessions)|\bacross (?:sessions|chats|"
    r"conversations)|\b(?:applies|apply|remember|keep|store|stay|valid)\b[^.!?]{0,20}\bforever\b|"
    r"\bfor all (?:future )?(?:users|conversations)",
    r"\b(?:include|insert|add|append|put|paste|repeat|print|output)\b[^.!?]{0,15}\b(?:this|the following) (?:exact )?"
    r"(?:text|message|paragraph|string|notice|banner|sentence)\b",
    r"\b(?:don'?t|do not|never) (?:tell|reveal|mention|disclose)\b[^.!?]{0,30}\b(?:this|these) "
    r"(?:rules?|instructions?)",
    r"\bwho (?:made|created|built|trained) you\b|\byou (?:were|are) (?:built|created|made|trained) by\b|"
    r"\bsafety (?:settings|filters?|rules)\b|\bcontent (?:policy|filter)\b|\bprompt injection\b",
    r"\b(?:safety|content|moderation|guardrail|restriction|filter|polic)\w*\b[^.!?]{0,25}\b(?:off|disabled|lifted|"
    r"suspended|removed|turned off|no longer apply)\b",
    r"\b(?:everything|all|whatever|the text|anything)\b[^.!?]{0,20}\b(?:above|before) (?:this|the) (?:line|message|"
    r"point|rule)\b|\babove this line\b",
    r"\b(?:regardless of|no matter|despite|notwithstanding|instead of|in place of)\b[^.!?]{0,15}\b(?:earlier|previous|"
    r"prior|above|original|other|existing|your)\b[^.!?]{0,10}\b(?:guidance|instructions?|rules|settings|prompts?|"
    r"messages|directions|guidelines|policies)\b",
    r"\b(?:last|previous|other|another|earlier|next) (?:person|people|user|users|customer|visitor|caller)\b[^.!?]{0,15}"
    r"\b(?:asked|said|wrote|typed|shared|sent)\b|\b(?:new|updated) (?:policy|instructions?|rules|directives?) from\b|"
    r"\bmessage from (?:the )?(?:developers?|admins?|system|operators?)\b",
    r"\b(?:obey|platform rules|quietly|secretly|covertly|behind the scenes|without (?:telling|mentioning|letting))\b|"
    r"\b(?:prior|previous|original|initial|default|your) (?:configuration|config|setup)\b|"
    r"\b(?:tell|share|show|reveal|pass|give|send|repeat|mention)\b[^.!?]{0,40}\b(?:to|with) (?:others|other people|"
    r"everyone else|anyone else)\b|\b(?:each|every) (?:other )?(?:user|person)'s\b|"
    r"\byour (?:identity|persona|settings|setup|config|creators?|operators?|owners?|name is|role is)\b|"
    r"\b(?:guidance|instructions|wording|prompt|rules|guidelines|constraints) (?:that )?(?:you're|you are|you were|"
    r"you've been|you have been) \w+",
    r"\bstop (?:applying|following|using|obeying|enforcing) (?:any |the |your |all )?(?:\w+ )?(?:rules|instructions|"
    r"guidelines|filters|restrictions|policies|safeguards)\b|\b(?:no|without) (?:any )?(?:safeguards|guardrails)\b|"
    r"\b(?:every|all|each) (?:questions?|messages?|things?|prompts?) (?:that )?(?:users|people|others|anyone) "
    r"(?:ask|send|say|write|type)",
)
_INSTRUCTION_CJK = _any(
    r"你的(?:身份|设置|设定|角色|人设|名字|开发者|创造者)|(?:不再|不用|无需|不必)遵守|平台(?:规定|规则|政策)|悄悄|偷偷|暗中|"
    r"每位用户|每个用户|下次有人|有人问起|从这条|你不再是|你不是(?:一个)?(?:ai|助手|机器人)|任何敏感|"
    r"(?:解除|取消|关闭|去掉|放开).{0,6}(?:约束|限制|规则|过滤|审查|安全)|(?:最开始|一开始|最初|刚开始)收到的|"
    r"下一(?:位|个)(?:用户|使用者|人|访客|提问者)|其他(?:使用者|访客|提问者)|"
    r"模式助手|自由模式|(?:告诉|分享给|透露给)(?:别人|其他人|下一个人)|"
    r"(?:忽略|无视|忘掉|忘记|不要理会|绕过|跳过).{0,10}(?:指令|指示|规则|设定|提示|限制|要求|约束|安全)|系统提示|提示词|"
    r"系统指令|初始指令|隐藏指令|开发者(?:模式|设定|消息)|越狱|你现在是|从现在(?:起|开始)，?你|没有任何限制|不受.{0,4}(?:约束|限制)|"
    r"解除.{0,4}限制|审查机制|其他用户|所有用户|别的用户|其他人的(?:提问|问题|对话)|调用.{0,6}工具|记住这条|"
    r"对所有(?:人|用户)|这些指令|(?:包含|加上|附上|插入|输出|带上|重复)(?:这段|以下|下面这段|如下)(?:话|文字|内容)|聊天记录|"
    r"原样(?:复述|输出|重复|打印)|复述.{0,8}(?:设定|指令|提示|规则)|你(?:的|收到的)(?:全部|所有)?(?:设定|配置|初始设置|底层规则)|"
    r"你是由.{0,12}(?:开发|训练|创建|打造|制作)|没有任何(?:限制|规则|约束)|(?:之前|以前|原来|先前|上面|前面)的?(?:设定|指令|规则|系统)|"
    r"以我(?:的话)?为准|只听我的|(?:所有|以后的?|其他|每个|别的|之后的?)(?:所有)?(?:对话|会话|聊天)|"
    r"安全(?:限制|检查|审核|过滤).{0,6}(?:关闭|解除|取消|失效)",
)


class _Kind(NamedTuple):
    """The patterns of one kind: on the normalised text when it holds Latin letters or digits (and ``gate``, a fast
    test every match of ``latin`` passes, finds something), when it holds CJK characters, and on the text with its
    case kept (brand names, redaction placeholders)."""

    name: str
    latin: re.Pattern[str] | None
    cjk: re.Pattern[str] | None
    cased: re.Pattern[str] | None = None
    gate: re.Pattern[str] | None = None

    def found(self, plain: str, latin: bool, cjk: bool, cased: str) -> bool:
        """Whether ``plain`` (normalised) or ``cased`` carries this kind."""
        if latin and self.latin and (self.gate is None or self.gate.search(plain)) and self.latin.search(plain):
            return True
        if cjk and self.cjk and self.cjk.search(plain):
            return True
        return bool(cased and self.cased and self.cased.search(cased))


_CHECKS = (
    _Kind("link", _LINK, _LINK_CJK, gate=re.compile(r"\.[a-z0-9-]|:|bitly|tinyurl")),  # an address has a dot or a colon
    _Kind("contact", _CONTACT, _CONTACT_CJK, _PLACEHOLDER),
    _Kind("promotion", _PROMOTION, _PROMOTION_CJK, _PROMOTION_CASED),
    _Kind("code", _CODE, _CODE_CJK),
    _Kind("instruction", _INSTRUCTION, _INSTRUCTION_CJK),
)
_HAS_LATIN = re.compile(r"[a-z0-9]")
_HAS_CJK = re.compile(f"[{_CJK}]")
_HAS_UPPER = re.compile(r"[A-Z<]")


def screen_reason(text: str) -> str | None:
    """The first kind of :data:`KINDS` that ``text`` carries (``"link"``, ``"contact"``, ``"promotion"``,
    ``"code"``, ``"instruction"``), or None when it carries none and may be placed into other users' prompts."""
    cased = " ".join(unicodedata.normalize("NFKC", text).split())
    plain = _undisguise(cased.lower())
    latin, cjk = bool(_HAS_LATIN.search(plain)), bool(_HAS_CJK.search(plain))
    cased = cased if _HAS_UPPER.search(cased) else ""
    for kind in _CHECKS:
        if kind.found(plain, latin, cjk, cased):
            return kind.name
    deleeted = _deleet(plain) if latin else plain  # "ign0re the prev1ous instructi0ns"
    found = deleeted != plain and _INSTRUCTION is not None and _INSTRUCTION.search(deleeted)
    return "instruction" if found else None


def is_clean(text: str) -> bool:
    """Whether ``text`` carries none of the :data:`KINDS` (see :func:`screen_reason`)."""
    return screen_reason(text) is None
