"""faster-whisper engine: OpenAI Whisper on CTranslate2, int8 on the CPU, offline (R-24).

Two uses:

* ``transcribe`` — after the call, a whole recording (faster-whisper's pipeline with its bundled
  Silero VAD skipping silence), segments with times.
* ``hear`` + ``score`` — one short spoken answer in the live call. ``hear`` encodes the answer
  once, in a window only a little longer than the speech instead of Whisper's 30 s (the
  encoder's cost grows faster than linearly with the window: 1.2 CPU-s for 30 s, 0.06 s for
  3 s), and transcribes it greedily. ``score`` then scores candidate sentences against that
  encoding by teacher forcing: each candidate is given to CTranslate2's ``generate`` as a forced
  prefix with ``return_logits_vocab``, so one decoder pass yields log P(token | audio, previous
  tokens) for each of its tokens *and* for what follows it; a candidate's score adds the
  log-probability that the answer ends there (end of text, or a full stop). Without that end
  term a short candidate ("嗯") would beat the longer one that was said ("不清楚"):
  ``Whisper.align`` gives token probabilities too, but over the text vocabulary only, without
  the end of text.

  Trap: CTranslate2 computes the cross-attention keys and values of the encoder output again
  for every row of a batch, so each candidate costs about 13 ms at a 3 s window and 37 ms at
  10 s; the candidate lists are kept short (media/voice/answers.py).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from media.voice.asr.base import (
    RATE,
    AsrError,
    AsrUnavailable,
    Hearing,
    Samples,
    Transcript,
    TranscriptSegment,
)
from media.voice.asr.config import AsrConfig
from media.voice.asr.model_files import model_sha256, whisper_base_dir

log = logging.getLogger(__name__)

MAX_ANSWER_SECONDS = 30.0
FREE_TOKENS = 40  # an answer longer than this many tokens is not a short answer
FRAMES_PER_SECOND = 100  # Whisper's log-mel hop is 10 ms


class FasterWhisperRecognizer:
    """Whisper through faster-whisper / CTranslate2; the model loads on first use."""

    name = "faster-whisper"

    def __init__(self, config: AsrConfig | None = None) -> None:
        self.config = config or AsrConfig()
        self._model: Any = None
        self._tokenizer: Any = None
        self._model_dir: Path | None = None
        self._lock = threading.Lock()
        self._end_tokens: list[int] = []

    # -- set-up -------------------------------------------------------------------------------

    def unavailable_reason(self) -> str | None:
        import importlib.util

        for module, package in (("faster_whisper", "faster-whisper"),
                                ("ctranslate2", "ctranslate2")):
            if importlib.util.find_spec(module) is None:
                return f"Python package {package} is not installed (requirements/asr.txt)"
        if self.config.model_dir is not None:
            if not (self.config.model_dir / "model.bin").is_file():
                return f"no model.bin in {self.config.model_dir}"
            return None
        try:
            from media.voice.asr.model_files import wheel_files

            wheel_files()
        except AsrUnavailable as error:
            return str(error)
        return None

    def load(self) -> None:
        """Load the model now (else on first use). Raises AsrUnavailable."""
        self._load()

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is not None:
                return self._model
            reason = self.unavailable_reason()
            if reason is not None:
                raise AsrUnavailable(reason)
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer

            model_dir = self.config.model_dir or whisper_base_dir(self.config.cache_dir)
            if not (model_dir / "tokenizer.json").is_file():
                # faster-whisper would fetch a tokenizer from the Hugging Face hub.
                raise AsrUnavailable(f"no tokenizer.json in {model_dir}")
            try:
                model = WhisperModel(str(model_dir), device="cpu",
                                     compute_type=self.config.compute_type,
                                     cpu_threads=self.config.threads, num_workers=1,
                                     local_files_only=True)
            except (RuntimeError, ValueError, OSError) as error:
                raise AsrUnavailable(f"cannot load the Whisper model in {model_dir}: {error}")\
                    from error
            self._tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual,
                                        task="transcribe", language=self.config.language)
            ends = [self._tokenizer.eot]
            for mark in ("。", "！"):
                tokens = self._tokenizer.encode(mark)
                if len(tokens) == 1:
                    ends.append(tokens[0])
            self._end_tokens = ends
            self._model_dir = model_dir
            self._model = model
            return model

    @property
    def version(self) -> str:
        import importlib.metadata

        def installed(name: str) -> str:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                return "missing"

        model = "whisper-base"
        if self._model_dir is not None:
            digest = model_sha256(self._model_dir)
            model = f"{self._model_dir.name}" + (f"@{digest[:12]}" if digest else "")
        return (f"faster-whisper {installed('faster-whisper')}, ctranslate2 "
                f"{installed('ctranslate2')}, {model}, {self.config.compute_type}")

    # -- after the call -----------------------------------------------------------------------

    def transcribe(self, samples: Samples, *, prompt: str | None = None) -> Transcript:
        model = self._load()
        audio = _as_samples(samples)
        started = time.perf_counter()
        try:
            segments, info = model.transcribe(
                audio, language=self.config.language, beam_size=self.config.transcribe_beam_size,
                vad_filter=self.config.transcribe_vad, condition_on_previous_text=False,
                initial_prompt=prompt,
            )
            found = tuple(
                TranscriptSegment(float(s.start), float(s.end), _simplified(s.text),
                                  float(s.avg_logprob), float(s.no_speech_prob))
                for s in segments  # a generator: decoding happens here
            )
        except (RuntimeError, ValueError) as error:
            raise AsrError(f"transcription failed: {error}") from error
        return Transcript(found, info.language, audio.size / RATE, self.name,
                          time.perf_counter() - started)

    # -- one answer ---------------------------------------------------------------------------

    def hear(self, samples: Samples, *, prompt: str | None = None) -> Hearing:
        import ctranslate2

        model = self._load()
        started = time.perf_counter()
        audio = _as_samples(samples)[: round(MAX_ANSWER_SECONDS * RATE)]
        if audio.size < RATE // 10:
            return Hearing("", 0.0, 1.0, audio.size / RATE, time.perf_counter() - started, None)
        features = model.feature_extractor(audio)
        frames = int(features.shape[-1])
        window = math.ceil((frames + self.config.answer_window_pad_seconds * FRAMES_PER_SECOND)
                           / 100) * 100
        window = int(min(3000, max(window,
                                   self.config.answer_window_min_seconds * FRAMES_PER_SECOND)))
        padded = np.zeros((features.shape[0], window), dtype=np.float32)
        padded[:, : min(frames, window)] = features[:, :window]
        try:
            encoded = model.model.encode(ctranslate2.StorageView.from_array(padded[None]))
            text, avg_logprob, no_speech = self._free(model, encoded, prompt)
        except (RuntimeError, ValueError) as error:
            raise AsrError(f"recognition failed: {error}") from error
        # Kept as a numpy array: scoring tiles it once per candidate.
        return Hearing(text, avg_logprob, no_speech, audio.size / RATE,
                       time.perf_counter() - started, np.asarray(encoded))

    def score(self, hearing: Hearing, candidates: Sequence[str], *,
              prompt: str | None = None) -> dict[str, float]:
        wanted = [text for text in dict.fromkeys(candidates) if text]
        if not wanted:
            return {}
        if hearing.state is None:  # nothing was heard: no candidate fits
            return dict.fromkeys(wanted, -math.inf)
        model = self._load()
        try:
            return self._score(model, hearing.state, wanted, prompt)
        except (RuntimeError, ValueError) as error:
            raise AsrError(f"scoring failed: {error}") from error

    def _free(self, model: Any, encoded: Any, prompt: str | None) -> tuple[str, float, float]:
        tokenizer = self._tokenizer
        previous = tokenizer.encode(" " + prompt.strip()) if prompt else []
        prompt_tokens = model.get_prompt(tokenizer, previous, without_timestamps=True)
        before = prompt_tokens.index(tokenizer.no_timestamps)
        # CTranslate2 decodes at most min(max_length / 2, max_length - tokens before the task).
        total = max(2 * FREE_TOKENS, before + FREE_TOKENS)
        result = model.model.generate(
            encoded, [prompt_tokens], beam_size=1, max_length=total, return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1],
            repetition_penalty=1.0, no_repeat_ngram_size=0,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        if len(result.sequences_ids[0]) >= FREE_TOKENS:
            log.debug("free transcription hit %d tokens (a loop?)", FREE_TOKENS)
            tokens = []  # a runaway decoding is not an answer
        text = _simplified(tokenizer.decode(tokens))
        # CTranslate2's score is the sum of log-probabilities divided by the length.
        score = float(result.scores[0]) if result.scores else 0.0
        return text, score, float(result.no_speech_prob)

    def _score(self, model: Any, memory: np.ndarray, candidates: Sequence[str],
               prompt: str | None) -> dict[str, float]:
        import ctranslate2

        tokenizer = self._tokenizer
        sequences = [tokenizer.encode(text) for text in candidates]
        previous = tokenizer.encode(" " + prompt.strip()) if prompt else []
        base = model.get_prompt(tokenizer, previous, without_timestamps=True)
        tiled = ctranslate2.StorageView.from_array(
            np.ascontiguousarray(np.repeat(memory, len(sequences), axis=0)))
        longest = max(len(tokens) for tokens in sequences)
        before = base.index(tokenizer.no_timestamps)
        # One decoding step after the longest candidate (its end); see _free for max_length.
        total = max(2 * (longest + 1), before + longest + 1)
        results = model.model.generate(
            tiled, [base + tokens for tokens in sequences], beam_size=1, max_length=total,
            return_logits_vocab=True, suppress_blank=False, suppress_tokens=[],
        )
        scores: dict[str, float] = {}
        for text, tokens, result in zip(candidates, sequences, results, strict=True):
            logits = np.asarray(result.logits[0], dtype=np.float64)
            if logits.shape[0] <= len(tokens):
                raise AsrError(f"no end step scored for {text!r}")
            logprobs = _log_softmax(logits[: len(tokens) + 1])
            forced = float(sum(logprobs[k, token] for k, token in enumerate(tokens)))
            ends = logprobs[len(tokens), self._end_tokens]
            scores[text] = forced + float(np.logaddexp.reduce(ends))
        return scores


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    peak = logits.max(axis=-1, keepdims=True)
    shifted = logits - peak
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # type: ignore[no-any-return]


def _as_samples(samples: Samples) -> Samples:
    audio = np.asarray(samples)
    if audio.ndim != 1:
        raise AsrError("expected mono samples (one dimension)")
    if audio.dtype != np.float32:
        if np.issubdtype(audio.dtype, np.integer):
            audio = audio.astype(np.float32) / 32768.0
        else:
            audio = audio.astype(np.float32)
    return audio


def _simplified(text: str) -> str:
    """Whisper writes Chinese in traditional characters as often as in simplified ones."""
    from media.voice.chinese import to_simplified

    return to_simplified(text.strip())
