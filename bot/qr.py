"""QR codes of invitation links, drawn in the process with segno (pure Python, nothing
fetched): the console shows the image and the customer scans it with WeChat or the camera."""

from __future__ import annotations

import segno


def svg_data_uri(text: str) -> str:
    """An SVG data URI of `text` as a QR code (error correction M, quiet zone 4 modules)."""
    code = segno.make_qr(text, error="m")
    return str(code.svg_data_uri(scale=6, border=4, dark="#000", light="#fff"))

