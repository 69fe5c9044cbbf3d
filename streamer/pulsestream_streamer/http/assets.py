"""Files served as they are: the dashboard (``/static/...``, ``/``) and the client module (``/client/...``).

The client module and the dashboard's modules are ES modules, which browsers
load only with a JavaScript content type (``text/javascript``, RFC 9239), so
the types are this module's, never guessed from the host's ``mimetypes``
(which maps ``.ts`` to Qt's linguist files). Every answer carries a strong
``ETag`` made from the content and ``Cache-Control: no-cache``: browsers keep
the files but ask each time, and a ``304`` costs a round trip, not the bytes.
The files change with the server (the dashboard ships with it), so nothing
is cached for longer; and an ETag from the content is the same on every
replica, where one from the modification time is not.

Files are looked up in a worker thread (a stat per request), read once and kept while their size and
modification time stay the same (a few hundred KB in all). A path that leaves
the folder, names a hidden file or does not exist answers ``404`` in the JSON
error shape of every other refusal.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from fastapi.responses import Response

from pulsestream_streamer.http.problems import problem

__all__ = ["CONTENT_TYPES", "Assets"]

#: Content types by suffix; others are not served.
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".ts": "application/typescript; charset=utf-8",  # the module's .d.ts, as esm.sh and Deno serve them
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".LICENSE": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE
}

#: Browsers may keep a copy but must revalidate it (with If-None-Match) before each use.
CACHE_CONTROL = "no-cache"


@dataclass(frozen=True, slots=True)
class _File:
    stamp: tuple[int, int]  # (size, mtime_ns)
    body: bytes
    etag: str
    content_type: str


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` list names ``etag`` (weak comparison, RFC 9110 13.1.2)."""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


class Assets:
    """The files under ``root``, by relative path, with content types and ETags."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._files: dict[Path, _File] = {}

    def _locate(self, relative: str) -> Path | None:
        parts = relative.split("/")
        if not relative or "\\" in relative or "\x00" in relative or any(p in ("", ".", "..") for p in parts):
            return None
        if any(part.startswith(".") for part in parts):
            return None
        path = self.root.joinpath(*parts)
        if path.suffix not in CONTENT_TYPES:
            return None
        return path

    def _load(self, path: Path) -> _File | None:
        """The file at ``path``, read again only when its size or modification time changed (in a thread)."""
        try:
            stat = path.stat()
            if not path.is_file():
                return None
            stamp = (stat.st_size, stat.st_mtime_ns)
            cached = self._files.get(path)
            if cached is not None and cached.stamp == stamp:
                return cached
            body = path.read_bytes()
        except (OSError, ValueError):
            return None
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        loaded = _File(stamp, body, etag, CONTENT_TYPES[path.suffix])
        self._files[path] = loaded
        return loaded

    async def response(self, request: Request, relative: str) -> Response:
        """``relative`` (a path under the root) as an answer: 200, 304 when the client holds it, else 404."""
        path = self._locate(relative)
        found = await asyncio.to_thread(self._load, path) if path is not None else None
        if found is None:
            return problem(404, "not_found", f"no file {request.url.path}")
        headers = {"ETag": found.etag, "Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
        if _matches(request.headers.get("if-none-match", ""), found.etag):
            return Response(status_code=304, headers=headers)
        return Response(found.body, media_type=found.content_type, headers=headers)
