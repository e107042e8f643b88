"""Text preparation for speech: sentence splitting (for sentence marks) and reading numbers aloud.

Neural engines (edge-tts) normalise numbers themselves; espeak-ng reads pinyin and would spell
digits in English, so before conversion to pinyin every number becomes Chinese words, read the
way a Chinese speaker reads it: amounts and counts as numbers (一万二千元), telephone, licence and
ID numbers digit by digit (一二三七八), years digit by digit (二零二六年).
"""

from __future__ import annotations

import re

from pypinyin import Style, lazy_pinyin

_SENTENCE = re.compile(r"[^。！？；!?;\n]+[。！？；!?;]*[”」』）)]?")
_DIGIT_WORDS = "零一二三四五六七八九"
_SMALL_UNITS = ("", "十", "百", "千")
_BIG_UNITS = ("", "万", "亿", "万亿")
_COUNTED_BY = "元万亿日天岁周个次年月期项份倍人"


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` with their closing punctuation; blank pieces are dropped."""
    sentences = [match.group(0).strip() for match in _SENTENCE.finditer(text)]
    return [sentence for sentence in sentences if _has_speech(sentence)]


def _has_speech(text: str) -> bool:
    return any(char.isalnum() for char in text)


def integer_words(number: int) -> str:
    """Chinese reading of a non-negative integer: 10005 → 一万零五, 15 → 十五."""
    if number < 0:
        return "负" + integer_words(-number)
    if number == 0:
        return "零"
    groups: list[int] = []
    while number:
        number, group = divmod(number, 10_000)
        groups.append(group)
    if len(groups) > len(_BIG_UNITS):
        return digit_words(str(number))
    words = ""
    need_zero = False
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            need_zero = bool(words)
            continue
        if need_zero or (words and group < 1000):
            words += "零"
        words += _group_words(group) + _BIG_UNITS[index]
        need_zero = False
    # 一十五 is said 十五 at the start of a number.
    return words[1:] if words.startswith("一十") else words


def _group_words(group: int) -> str:
    words = ""
    zero_pending = False
    for position in range(3, -1, -1):
        digit = (group // 10**position) % 10
        if digit == 0:
            zero_pending = bool(words)
            continue
        if zero_pending:
            words += "零"
            zero_pending = False
        words += _DIGIT_WORDS[digit] + _SMALL_UNITS[position]
    return words


def digit_words(digits: str) -> str:
    """Digit-by-digit reading, as for telephone and licence numbers: 12378 → 一二三七八."""
    return "".join(_DIGIT_WORDS[int(char)] if char.isdigit() else char for char in digits)


def _decimal_words(text: str) -> str:
    whole, _, fraction = text.replace(",", "").partition(".")
    words = integer_words(int(whole))
    fraction = fraction.rstrip("0")
    return words + ("点" + digit_words(fraction) if fraction else "")


_NUMBER = re.compile(
    r"(?P<phone>\d+(?:-\d+)+)"
    r"|(?P<percent>\d+(?:\.\d+)?)[%％]"
    r"|(?P<grouped>\d{1,3}(?:,\d{3})+(?:\.\d+)?)"
    r"|(?P<year>\d{4})(?=年)"
    r"|(?P<decimal>\d+\.\d+)"
    r"|(?P<integer>\d+)"
)


def numbers_to_words(text: str) -> str:
    """Replace every number in `text` by its Chinese reading."""

    def replace(match: re.Match[str]) -> str:
        if match.group("phone"):
            return "，".join(digit_words(part) for part in match.group("phone").split("-"))
        if match.group("percent"):
            return "百分之" + _decimal_words(match.group("percent"))
        if match.group("grouped"):
            return _decimal_words(match.group("grouped"))
        if match.group("year"):
            return digit_words(match.group("year"))
        if match.group("decimal"):
            return _decimal_words(match.group("decimal"))
        digits = match.group("integer")
        following = text[match.end() : match.end() + 1]
        counted = following != "" and following in _COUNTED_BY
        # Codes (leading zero, or long and not followed by a unit) are read digit by digit.
        if (digits.startswith("0") and len(digits) > 1) or (len(digits) >= 5 and not counted):
            return digit_words(digits)
        return integer_words(int(digits))

    return _NUMBER.sub(replace, text)


_SYLLABLE = re.compile(r"^[a-z]+[1-5]$")
# Readings pypinyin gets wrong in disclosure texts. 为 is mostly wéi here (犹豫期为十五日,
# 以保险合同为准), wèi only before the person it serves (为您投保) and in a few fixed words.
_READINGS: dict[str, str] = {
    "为": "wei2",
    "因为": "yin1 wei4",
    "为了": "wei4 le5",
    "为您": "wei4 nin2",
    "为你": "wei4 ni3",
    "为他": "wei4 ta1",
    "为她": "wei4 ta1",
    "为其": "wei4 qi2",
    "为此": "wei4 ci3",
    "为何": "wei4 he2",
    "为什么": "wei4 shen2 me5",
    "还款": "huan2 kuan3",
}
_READING = re.compile(
    "(" + "|".join(sorted(map(re.escape, _READINGS), key=len, reverse=True)) + ")"
)
_PAUSE_LONG = set("。！？；!?;")
_PAUSE_SHORT = set("，、：,:")


def to_pinyin_tone3(text: str) -> str:
    """Numbered-tone pinyin for espeak-ng's `cmn-latn-pinyin` voice.

    Chinese punctuation becomes ASCII punctuation so that espeak pauses where a reader would;
    quotes and brackets are dropped; Latin letters are kept as they are.
    """
    items: list[str] = []
    for segment in _READING.split(numbers_to_words(text)):
        if segment in _READINGS:
            items.extend(_READINGS[segment].split())
        elif segment:
            items.extend(lazy_pinyin(segment, style=Style.TONE3, neutral_tone_with_five=True))
    out: list[str] = []
    for item in items:
        if _SYLLABLE.match(item):
            out.append(item)
            continue
        # Runs that are not hanzi come back unchanged: punctuation, Latin words, spaces.
        word = ""
        for char in item + " ":
            if char.isascii() and char.isalnum():
                word += char
                continue
            if word:
                out.append(word)
                word = ""
            if char in _PAUSE_LONG:
                out.append(".")
            elif char in _PAUSE_SHORT:
                out.append(",")
    return " ".join(out).replace(" .", ".").replace(" ,", ",")
