"""Text preparation for speech: numbers read the Chinese way, sentences, pinyin for espeak-ng."""

from __future__ import annotations

import pytest

from media.tts.text import integer_words, numbers_to_words, split_sentences, to_pinyin_tone3


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "零"),
        (10, "十"),
        (15, "十五"),
        (105, "一百零五"),
        (1005, "一千零五"),
        (10005, "一万零五"),
        (12000, "一万二千"),
        (200000, "二十万"),
        (310500, "三十一万零五百"),
        (1000001, "一百万零一"),
        (300000000, "三亿"),
    ],
)
def test_integers_are_read_as_amounts(number: int, words: str) -> None:
    assert integer_words(number) == words


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("每期保险费为人民币12,000元", "每期保险费为人民币一万二千元"),
        ("犹豫期为15日", "犹豫期为十五日"),
        ("投诉热线12378", "投诉热线一二三七八"),
        ("电话400-000-5678", "电话四零零，零零零，五六七八"),
        ("执业证编号02000133", "执业证编号零二零零零一三三"),
        ("2026年", "二零二六年"),
        ("费率1.5%", "费率百分之一点五"),
        ("保费300000元", "保费三十万元"),
    ],
)
def test_numbers_are_read_as_a_chinese_speaker_reads_them(text: str, spoken: str) -> None:
    assert numbers_to_words(text) == spoken


def test_sentences_keep_their_punctuation_and_drop_blanks() -> None:
    text = "您好！本产品的犹豫期为15日；请问您是否清楚？\n“清楚。”  。"
    assert split_sentences(text) == [
        "您好！",
        "本产品的犹豫期为15日；",
        "请问您是否清楚？",
        "“清楚。”",
    ]


def test_pinyin_for_espeak_has_tones_and_pauses() -> None:
    assert to_pinyin_tone3("您好，犹豫期为15日。请回答“清楚”！") == (
        "nin2 hao3, you2 yu4 qi1 wei2 shi2 wu3 ri4. qing3 hui2 da2 qing1 chu3."
    )
