"""espeak-ng engine: robotic but always available offline, the chain's last resort (R-23).

espeak-ng's `cmn` voice mispronounces hanzi, so the text is converted to numbered-tone pinyin
(pypinyin TONE3) and spoken with the `cmn-latn-pinyin` voice. Needs the Debian package espeak-ng.
"""

from __future__ import annotations

import asyncio
import shutil

from media.tts.audio import decode
from media.tts.base import PcmAudio, TtsError
from media.tts.text import to_pinyin_tone3

ESPEAK_SAMPLE_RATE = 22_050


class EspeakTTS:
    """Mandarin through espeak-ng reading pinyin."""

    name = "espeak"
    default_voice = "cmn-latn-pinyin"

    def __init__(
        self, binary: str = "espeak-ng", words_per_minute: int = 190, timeout_seconds: float = 30.0
    ) -> None:
        self.binary = binary
        self.words_per_minute = words_per_minute
        self.timeout_seconds = timeout_seconds

    def unavailable_reason(self) -> str | None:
        if shutil.which(self.binary) is None:
            return f"{self.binary} not found on PATH (Debian package espeak-ng)"
        return None

    async def synthesize(self, text: str, *, voice: str, rate: float) -> PcmAudio:
        executable = shutil.which(self.binary)
        if executable is None:
            raise TtsError(self.unavailable_reason())
        pinyin = to_pinyin_tone3(text)
        if not pinyin.strip(" .,"):
            raise TtsError(f"nothing speakable in {text!r}")
        speed = max(80, min(450, round(self.words_per_minute * rate)))
        process = await asyncio.create_subprocess_exec(
            executable,
            "-v",
            voice,
            "-s",
            str(speed),
            "--stdin",
            "--stdout",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            wav, errors = await asyncio.wait_for(
                process.communicate(pinyin.encode("ascii", "ignore")), self.timeout_seconds
            )
        except TimeoutError:
            raise TtsError(f"espeak-ng timed out after {self.timeout_seconds} s") from None
        finally:
            # On a time-out or a cancelled job, no orphan espeak-ng may keep running.
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0 or not wav:
            message = errors.decode("utf-8", "replace").strip()
            raise TtsError(f"espeak-ng failed ({process.returncode}): {message}")
        try:
            # espeak-ng streams a WAV whose header sizes are placeholders; FFmpeg reads it anyway.
            return await asyncio.to_thread(decode, wav, ESPEAK_SAMPLE_RATE)
        except ValueError as error:
            raise TtsError(f"espeak-ng output unreadable: {error}") from error
