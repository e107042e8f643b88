"""Runs a recorded call until it is killed (for the crash test, R-30).

    python -m tests.media_call.crash_worker STORAGE_ROOT CUSTOMER.webm AGENT.webm

Prints one ``SEGMENT <relative path> <sha256>`` line per finished segment, flushed at once.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from media.call import CallHub, CallHubConfig, SegmentWritten
from media.call.client import CallClient
from testing.call_media import EncodedMedia, PrerecordedTrack


def report(event: SegmentWritten) -> None:
    print("SEGMENT", event.path, event.sha256, flush=True)


async def main(root: Path, customer: Path, agent: Path) -> None:
    hub = CallHub(
        CallHubConfig(storage_root=root, segment_seconds=1.0, include_loopback=True),
        on_segment=report,
    )
    clients = []
    for role, path in (("customer", customer), ("agent", agent)):
        media = EncodedMedia.load(path)
        client = CallClient(audio=PrerecordedTrack(media, "audio"),
                            video=PrerecordedTrack(media, "video"))

        async def signal(sdp: str, type_: str, role: str = role) -> tuple[str, str]:
            return await hub.join("crash-1", role, sdp, type_)  # type: ignore[arg-type]

        await client.connect(signal)
        clients.append(client)
    print("CONNECTED", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
