"""Identity evidence at rest (R-12, R-52): uploads are checked, images re-encoded (which drops
EXIF and any other metadata), and every file is stored AES-GCM encrypted, write-once."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from security.crypto import FieldCipher
from workflow.errors import InvalidInput
from workflow.storage import LocalStorage, StoredFile

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp"}
VIDEO_TYPES = {"video/webm": "webm", "video/mp4": "mp4", "video/quicktime": "mp4"}
MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_VIDEO_BYTES = 25 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000  # refuses decompression bombs before decoding


@dataclass(frozen=True)
class CleanUpload:
    data: bytes
    extension: str


def clean_image(data: bytes) -> CleanUpload:
    """Decodes and re-encodes as JPEG: only pixels survive, never metadata or payloads."""
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidInput("upload_too_large", "图片过大（不超过 8 MB），请重新拍摄")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.width * probe.height > MAX_IMAGE_PIXELS:
                raise InvalidInput("image_too_large", "图片分辨率过高，请重新拍摄")
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise InvalidInput("image_unreadable", "图片无法识别，请重新拍摄或选择照片") from exc
    if min(rgb.size) < 200:
        raise InvalidInput("image_too_small", "图片太小，请靠近一些重新拍摄")
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=92)
    return CleanUpload(out.getvalue(), "jpg")


def clean_video(data: bytes, content_type: str) -> CleanUpload:
    """Checks size and container signature; the engines decode it (and refuse bad frames)."""
    if len(data) > MAX_VIDEO_BYTES:
        raise InvalidInput("upload_too_large", "视频过大（不超过 25 MB），请重新录制")
    extension = VIDEO_TYPES[content_type]
    webm = data[:4] == b"\x1a\x45\xdf\xa3"
    mp4 = data[4:8] == b"ftyp"
    if not (webm or mp4):
        raise InvalidInput("video_unreadable", "视频无法识别，请重新录制")
    return CleanUpload(data, "webm" if webm else "mp4" if mp4 else extension)


class EvidenceStore:
    """Encrypted, write-once files; the relative path is the associated data."""

    def __init__(self, storage: LocalStorage, cipher: FieldCipher) -> None:
        self.storage, self.cipher = storage, cipher

    def put(self, path: str, data: bytes) -> StoredFile:
        return self.storage.put(path, self.cipher.encrypt_bytes(data, f"evidence:{path}"))

    def get(self, path: str) -> bytes:
        return self.cipher.decrypt_bytes(self.storage.read(path), f"evidence:{path}")
