"""The publication folder over HTTP: strong ETags (SHA-256), conditional GET, ops endpoints.

Only plain files directly in the folder, named like the published ones, can be served: no
sub-directory, no dotfile (temporary files, lock), nothing outside it.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import REGISTRY, CollectorRegistry

from services.core.ops_http import add_ops_routes
from services.opendata.files import INDEX_NAME

CONTENT_TYPES = {".csv": "text/csv; charset=utf-8", ".json": "application/json"}
_SERVABLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(?:csv|json)$")
_CHUNK = 1024 * 1024
_CACHE_LIMIT = 256


class _Digests:
    """SHA-256 per file version (device, inode, mtime, size): a published file is hashed once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, int, int, int], str] = {}

    def etag(self, handle: BinaryIO, info: os.stat_result) -> str:
        key = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
        handle.seek(0)
        etag = f'"{digest.hexdigest()}"'
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = etag
        return etag


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 `If-None-Match`: weak comparison, `*` matches any current representation."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def _not_found() -> JSONResponse:
    return JSONResponse({"detail": "not found"}, status_code=404)


def _stream(handle: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := handle.read(_CHUNK):
            yield chunk
    finally:
        handle.close()


def create_app(
    directory: Path, registry: CollectorRegistry = REGISTRY, problem: Callable[[], str | None] | None = None
) -> FastAPI:
    """`problem`: why the publisher cannot publish right now (e.g. the database is unreachable)."""
    app = FastAPI(title="LabFlow open data", docs_url=None, redoc_url=None, openapi_url=None)
    digests = _Digests()

    def not_ready() -> str | None:
        if not (directory / INDEX_NAME).is_file():
            return "nothing published yet"
        return problem() if problem is not None else None

    add_ops_routes(app, not_ready, registry)

    @app.api_route("/{name}", methods=["GET", "HEAD"])
    def download(name: str, request: Request) -> Response:
        if not _SERVABLE.match(name):
            return _not_found()
        try:
            # O_NOFOLLOW: a symlink in the folder cannot point outside it
            fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return _not_found()
        # from here on the open file is what we hash and send: a publication replacing `name` meanwhile
        # (rename) cannot mix two versions under one ETag
        handle = os.fdopen(fd, "rb")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            handle.close()
            return _not_found()
        etag = digests.etag(handle, info)
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        media_type = CONTENT_TYPES[Path(name).suffix]
        if etag_matches(request.headers.get("if-none-match"), etag):
            handle.close()
            return Response(status_code=304, headers=headers)
        headers["Content-Length"] = str(info.st_size)
        if request.method == "HEAD":
            handle.close()
            return Response(headers=headers, media_type=media_type)
        return StreamingResponse(_stream(handle), headers=headers, media_type=media_type)

    return app
