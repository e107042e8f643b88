"""Chinese text as the answer rules and the error rate compare it: simplified characters, no
punctuation or spaces, numbers read as words (as the TTS speaks them)."""

from __future__ import annotations

import re
import unicodedata

# Enough for the answer lexicon when zhconv (requirements/asr.txt) is not installed.
_FALLBACK = str.maketrans(
    "說聽沒確認應該還對嗎麼這問題會為們講經點買讓請實話個願樣許麽謝錯聲裡裏",
    "说听没确认应该还对吗么这问题会为们讲经点买让请实话个愿样许么谢错声里里",
)
_NOT_SPOKEN = re.compile(r"[\s\W_]+", re.UNICODE)


def to_simplified(text: str) -> str:
    try:
        import zhconv
    except ImportError:
        return text.translate(_FALLBACK)
    return str(zhconv.convert(text, "zh-cn"))


def normalise(text: str) -> str:
    """Simplified characters, full-width forms folded, punctuation and spaces removed,
    numbers as Chinese words, Latin letters lower-cased."""
    from media.tts.text import numbers_to_words

    text = unicodedata.normalize("NFKC", to_simplified(text))
    text = numbers_to_words(text)
    return _NOT_SPOKEN.sub("", text).lower()
