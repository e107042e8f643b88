"""Serving an object of the evidence store over HTTP, with range requests (a `<video>` element
seeks with them): the local backend's own file through aiohttp's `FileResponse` (sendfile),
an S3 object as ranged GETs streamed in 1 MiB chunks — never the whole object in memory."""

from __future__ import annotations

import mimetypes

from aiohttp import web

from storage import ObjectMissing, ObjectStore


async def object_response(request: web.Request, store: ObjectStore, key: str, *,
                          headers: dict[str, str] | None = None,
                          content_type: str | None = None) -> web.StreamResponse:
    """The object, or the requested byte range of it (206). Raises `ObjectMissing`."""
    headers = dict(headers or {})
    kind = content_type or mimetypes.guess_type(key)[0] or "application/octet-stream"
    own = store.local_path(key)
    if own is not None:
        if not own.is_file():
            raise ObjectMissing(f"{key} not found")
        if content_type:
            headers["Content-Type"] = content_type
        return web.FileResponse(own, headers=headers)
    info = await store.stat(key)
    if info is None:
        raise ObjectMissing(f"{key} not found")
    size = info.size_bytes
    headers["Accept-Ranges"] = "bytes"
    headers["Content-Type"] = kind
    try:
        wanted = request.http_range
    except ValueError:
        raise web.HTTPRequestRangeNotSatisfiable(
            headers={"Content-Range": f"bytes */{size}"}) from None
    start, stop, status = 0, size, 200
    if wanted.start is not None or wanted.stop is not None:
        if wanted.start is not None and wanted.start < 0:  # bytes=-N: the last N bytes
            start = max(size + wanted.start, 0)
        else:
            start = wanted.start or 0
            stop = min(wanted.stop, size) if wanted.stop is not None else size
        if start >= size or stop <= start:
            raise web.HTTPRequestRangeNotSatisfiable(
                headers={"Content-Range": f"bytes */{size}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    headers["Content-Length"] = str(stop - start)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    if request.method != "HEAD":
        async for chunk in store.stream(key, start, stop):
            await response.write(chunk)
    await response.write_eof()
    return response
