#!/usr/bin/env python3
"""A tiny loopback HTTP file server for glance's ``http`` store (stdlib only).

    blobserver.py --port 19321 --dir .harness/blobs

Serves the files of one folder (no subfolders, no listing): ``HEAD /<name>`` and ``GET /<name>``
with ``Content-Length``, ``Range: bytes=a-b`` → 206, ``GET /`` → 200 ``ok`` (the harness's
readiness check).  glance_store's http store sends HEAD to learn an image's size when a location
is added, and GET (with Range for partial reads) when the image is downloaded.  Binds 127.0.0.1
only; each request is logged on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

HOST = "127.0.0.1"
NAME = re.compile(r"^/([A-Za-z0-9._-]+)$")
RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
CHUNK = 1024 * 1024


class BlobHandler(BaseHTTPRequestHandler):
    """HEAD and GET of the files in ``server.folder``."""

    protocol_version = "HTTP/1.1"
    server: BlobServer

    def do_HEAD(self) -> None:
        """Headers only: status, Content-Length, Content-Type."""
        self._answer(body=False)

    def do_GET(self) -> None:
        """The file (or the requested byte range of it)."""
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        if self.path == "/":
            self._plain(200, b"ok\n", body)
            return
        match = NAME.match(self.path.split("?", 1)[0])
        path = self.server.folder / match.group(1) if match else None
        if path is None or not path.is_file():
            self._plain(404, b"not found\n", body)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        wanted = RANGE.match(self.headers.get("Range", ""))
        if wanted:
            start = int(wanted.group(1))
            end = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            with open(path, "rb") as fh:
                fh.seek(start)
                self._copy(fh, end - start + 1)

    def _copy(self, fh: BinaryIO, left: int) -> None:
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                break
            self.wfile.write(chunk)
            left -= len(chunk)

    def _plain(self, status: int, text: bytes, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if body:
            self.wfile.write(text)


class BlobServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its folder."""

    daemon_threads = True

    def __init__(self, port: int, folder: Path) -> None:
        self.folder = folder
        super().__init__((HOST, port), BlobHandler)


def main(argv: list[str] | None = None) -> int:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    server = BlobServer(args.port, args.dir.resolve())
    print(f"blobserver: serving {args.dir} on http://{HOST}:{args.port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT is how the harness stops us
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
