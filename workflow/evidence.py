"""Identity evidence at rest (R-12, R-52): uploads are checked, images turned upright by their
EXIF orientation and re-encoded (which drops EXIF and any other metadata), and every file is
stored AES-GCM encrypted, write-once."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from security.crypto import FieldCipher
from storage import ObjectStore, StoredObject
from workflow.errors import InvalidInput

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp"}
VIDEO_TYPES = {"video/webm": "webm", "video/mp4": "mp4", "video/quicktime": "mp4"}
MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_VIDEO_BYTES = 25 * 1024 * 1024
# Checked from the header, before anything is decoded: a 24-megapixel camera's photo passes; a
# small file that claims 6000×6600 (a PNG of one colour is 128 KB) is refused before it costs
# two seconds of a core (issue 14).
MAX_IMAGE_PIXELS = 25_000_000


@dataclass(frozen=True)
class CleanUpload:
    data: bytes
    extension: str
    sha256: str = ""
    # The upright pixels (RGB, PIL) of a cleaned image, for the photo checks that follow.
    image: Any = field(default=None, repr=False, compare=False)


def check_image_header(data: bytes) -> tuple[int, int]:
    """Size and dimensions from the header only (PIL's `open` reads no pixels): cheap enough
    for the event loop, so an oversized image is refused before it waits for a core."""
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidInput("upload_too_large", "图片过大（不超过 8 MB），请重新拍摄")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise InvalidInput("image_unreadable", "图片无法识别，请重新拍摄或选择照片") from exc
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidInput("image_too_large", "图片分辨率过高，请重新拍摄")
    if min(width, height) < 200:
        raise InvalidInput("image_too_small", "图片太小，请靠近一些重新拍摄")
    return width, height


def clean_image(data: bytes) -> CleanUpload:
    """Decodes, turns upright by the EXIF orientation a phone writes (6: taken turned
    clockwise, 8: counter-clockwise…), and re-encodes as JPEG: only pixels survive, never
    metadata or payloads; dropping the orientation without applying it would store the card
    on its side (issue 15). Blocking (a 24-megapixel photo takes about a second of a core):
    run it with `run_cpu`."""
    check_image_header(data)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise InvalidInput("image_unreadable", "图片无法识别，请重新拍摄或选择照片") from exc
    if min(rgb.size) < 200:
        raise InvalidInput("image_too_small", "图片太小，请靠近一些重新拍摄")
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=92)
    jpeg = out.getvalue()
    return CleanUpload(jpeg, "jpg", hashlib.sha256(jpeg).hexdigest(), rgb)


def check_video(data: bytes, content_type: str) -> str:
    """Size and container signature (cheap); the extension to store it under."""
    if len(data) > MAX_VIDEO_BYTES:
        raise InvalidInput("upload_too_large", "视频过大（不超过 25 MB），请重新录制")
    extension = VIDEO_TYPES[content_type]
    webm = data[:4] == b"\x1a\x45\xdf\xa3"
    mp4 = data[4:8] == b"ftyp"
    if not (webm or mp4):
        raise InvalidInput("video_unreadable", "视频无法识别，请重新录制")
    return "webm" if webm else "mp4" if mp4 else extension


def clean_video(data: bytes, content_type: str) -> CleanUpload:
    """Checks size and container signature; the engines decode it (and refuse bad frames).
    Hashes the clip (up to 25 MB: run it with `run_cpu`)."""
    extension = check_video(data, content_type)
    return CleanUpload(data, extension, hashlib.sha256(data).hexdigest())


class EvidenceStore:
    """Encrypted, write-once objects in the evidence store (local folder or S3: encrypted at
    rest either way); the key is the associated data. Encrypting and decrypting run in the
    store's threads (a liveness clip is up to 25 MB)."""

    def __init__(self, storage: ObjectStore, cipher: FieldCipher) -> None:
        self.storage, self.cipher = storage, cipher

    async def put(self, path: str, data: bytes) -> StoredObject:
        return await self.storage.run(self.put_sync, path, data)

    async def get(self, path: str) -> bytes:
        return await self.storage.run(self.get_sync, path)

    def put_sync(self, path: str, data: bytes) -> StoredObject:
        """Blocking: for worker threads."""
        return self.storage.put_bytes_sync(path, self.cipher.encrypt_bytes(
            data, f"evidence:{path}"))

    def get_sync(self, path: str) -> bytes:
        """Blocking: for worker threads."""
        return self.cipher.decrypt_bytes(self.storage.get_bytes_sync(path), f"evidence:{path}")
