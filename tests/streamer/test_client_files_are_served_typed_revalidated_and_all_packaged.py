"""The client module and the dashboard's modules as a browser (and npm) gets them from the streamer (issue 16).

ES modules load only with a JavaScript content type; every file carries a content ETag and
``Cache-Control: no-cache`` so browsers revalidate (``304``) instead of keeping an old dashboard; a
missing file is a ``404`` in the JSON error shape; and every file of ``static/`` goes into the wheel.
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import httpx
import pytest
from services import Streamer

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "streamer" / "pulsestream_streamer" / "static"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/client/pulsestream.js", "text/javascript; charset=utf-8"),
        ("/client/pulsestream.d.ts", "application/typescript; charset=utf-8"),
        ("/client/package.json", "application/json"),
        ("/client/README.md", "text/markdown; charset=utf-8"),
        ("/client/LICENSE", "text/plain; charset=utf-8"),
        ("/static/dashboard/main.js", "text/javascript; charset=utf-8"),
        ("/static/dashboard.css", "text/css; charset=utf-8"),
        ("/static/vendor/d3.min.js", "text/javascript; charset=utf-8"),
        ("/", "text/html; charset=utf-8"),
    ],
)
async def test_files_are_served_with_their_type_and_revalidated_by_etag(
    streamer: Streamer, path: str, content_type: str
) -> None:
    async with httpx.AsyncClient(base_url=streamer.url, timeout=10) as client:
        first = await client.get(path)
        assert first.status_code == 200
        assert first.headers["content-type"] == content_type
        assert first.headers["cache-control"] == "no-cache"
        etag = first.headers["etag"]
        assert etag.startswith('"') and len(etag) > 10
        again = await client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        other = await client.get(path, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200 and other.content == first.content


async def test_the_module_is_the_packaged_file_and_its_package_json_exports_it(streamer: Streamer) -> None:
    async with httpx.AsyncClient(base_url=streamer.url, timeout=10) as client:
        module = await client.get("/client/pulsestream.js")
        package = (await client.get("/client/package.json")).json()
    assert module.content == (STATIC / "client" / "pulsestream.js").read_bytes()
    assert b"export function connect" in module.content
    assert package["type"] == "module"
    assert package["exports"]["."] == {"types": "./pulsestream.d.ts", "default": "./pulsestream.js"}
    for name in package["files"]:
        assert (STATIC / "client" / name).is_file(), name


@pytest.mark.parametrize(
    "path",
    ["/client/nope.js", "/client/../http/app.py", "/client/%2e%2e/index.html", "/client/.hidden", "/static/a\x00.js"],
)
async def test_a_missing_or_outside_file_is_a_json_404(streamer: Streamer, path: str) -> None:
    async with httpx.AsyncClient(base_url=streamer.url, timeout=10) as client:
        reply = await client.get(path.replace("\x00", "%00"))
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"


def test_every_file_of_static_is_in_the_wheel_s_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]
    files = [p for p in STATIC.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    missing = [str(p.relative_to(STATIC)) for p in files if not any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]
    assert not missing, f"not packaged (add a pattern to [tool.setuptools.package-data]): {missing}"
    assert json.loads((STATIC / "client" / "package.json").read_text())["name"] == "pulsestream"
