"""The publication folder over HTTP: a landing page, strong ETags (SHA-256), `Last-Modified`,
conditional GET (`If-None-Match`, else `If-Modified-Since`), gzip on request, ops endpoints.

Only plain files directly in the folder, named like the published ones, can be served: no
sub-directory, no dotfile (temporary files, lock), nothing outside it.

gzip: with `Accept-Encoding: gzip` a file is compressed on the fly (level 6, streamed, no
Content-Length); that representation has the weak ETag `W/"<sha256>"` (same content, other bytes: what
nginx does too), and every answer says `Vary: Accept-Encoding` so caches keep both.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import REGISTRY, CollectorRegistry

from services.core.ops_http import add_ops_routes
from services.opendata.files import INDEX_NAME
from services.opendata.landing import landing_page

CONTENT_TYPES = {
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_SERVABLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(?:csv|json|md|txt)$")
GZIP_LEVEL = 6
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


def accepts_gzip(accept_encoding: str | None) -> bool:
    """RFC 9110 `Accept-Encoding`: gzip (or `*`) listed with a non-zero weight."""
    if not accept_encoding:
        return False
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[coding.strip().lower()] = q
    if "gzip" in weights or "x-gzip" in weights:
        return max(weights.get("gzip", 0.0), weights.get("x-gzip", 0.0)) > 0
    return weights.get("*", 0.0) > 0


def http_date(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(int(timestamp), UTC), usegmt=True)


def not_modified_since(if_modified_since: str | None, mtime: float) -> bool:
    """`If-Modified-Since`: true when the file was not modified after that date (1 s resolution)."""
    if not if_modified_since:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError):
        return False  # an invalid date is ignored (RFC 9110 §13.1.3)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return int(mtime) <= since.timestamp()


def is_fresh(request: Request, etags: tuple[str, ...], mtime: float | None) -> bool:
    """Conditional GET: `If-None-Match` when sent (it takes precedence), else `If-Modified-Since`."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        return any(etag_matches(if_none_match, etag) for etag in etags)
    return mtime is not None and not_modified_since(request.headers.get("if-modified-since"), mtime)


def _gzip_stream(chunks: Iterator[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # gzip framing, mtime 0: reproducible
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()


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

    @app.api_route("/", methods=["GET", "HEAD"])
    def landing(request: Request) -> Response:
        body = landing_page(directory).encode()
        etag = f'"{hashlib.sha256(body).hexdigest()}"'
        index = directory / INDEX_NAME
        mtime = index.stat().st_mtime if index.is_file() else None
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if mtime is not None:
            headers["Last-Modified"] = http_date(mtime)
        if is_fresh(request, (etag,), mtime):
            return Response(status_code=304, headers=headers)
        headers["Content-Length"] = str(len(body))
        return Response(b"" if request.method == "HEAD" else body, headers=headers,
                        media_type="text/html; charset=utf-8")

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
        identity_etag = digests.etag(handle, info)
        gzip_etag = f"W/{identity_etag}"
        compress = accepts_gzip(request.headers.get("accept-encoding"))
        headers = {
            "ETag": gzip_etag if compress else identity_etag,
            "Last-Modified": http_date(info.st_mtime),
            "Cache-Control": "no-cache",
            "Vary": "Accept-Encoding",
        }
        media_type = CONTENT_TYPES[Path(name).suffix]
        if is_fresh(request, (identity_etag, gzip_etag), info.st_mtime):
            handle.close()
            return Response(status_code=304, headers=headers)
        if compress:
            headers["Content-Encoding"] = "gzip"
        else:
            headers["Content-Length"] = str(info.st_size)
        if request.method == "HEAD":
            handle.close()
            response = Response(headers=headers, media_type=media_type)
            if compress:  # as the GET: a streamed body of unknown length, not an empty one
                del response.headers["content-length"]
            return response
        body = _gzip_stream(_stream(handle)) if compress else _stream(handle)
        return StreamingResponse(body, headers=headers, media_type=media_type)

    return app
