"""Text-to-speech for script steps (R-23): engines behind one protocol, a fallback chain,
48 kHz WAV + Opus output with sentence marks, an on-disk cache and background pre-rendering."""

from media.tts.base import EngineUnavailable, PcmAudio, TextToSpeech, TtsError
from media.tts.cache import CachedSpeech, SpeechCache, cache_key
from media.tts.chain import (
    AllEnginesFailed,
    ChainLink,
    EngineAttempt,
    EngineChain,
    SentenceMark,
    SpeechResult,
)
from media.tts.prerender import (
    PrerenderedStep,
    PrerenderFailed,
    PrerenderProgress,
    PrerenderReport,
    prerender,
)
from media.tts.registry import DEFAULT_CHAIN, OFFLINE_CHAIN, EngineSpec, build_engine

__all__ = [
    "DEFAULT_CHAIN",
    "OFFLINE_CHAIN",
    "AllEnginesFailed",
    "CachedSpeech",
    "ChainLink",
    "EngineAttempt",
    "EngineChain",
    "EngineSpec",
    "EngineUnavailable",
    "PcmAudio",
    "PrerenderFailed",
    "PrerenderProgress",
    "PrerenderReport",
    "PrerenderedStep",
    "SentenceMark",
    "SpeechCache",
    "SpeechResult",
    "TextToSpeech",
    "TtsError",
    "build_engine",
    "cache_key",
    "prerender",
]
