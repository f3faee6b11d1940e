"""A local stand-in for the parts of the Hugging Face hub that `huggingface_hub` downloads use.

Repos are folders: `ROOT/<owner>/<name>/<files>`, each served as one commit on `main`. What
huggingface_hub 2.x calls (read from its source, version 2.4):

- `GET /api/models/<repo>[/revision/<rev>]`: repo info (`model_info`, and `snapshot_download`
  to resolve `main` to a commit); with `?blobs=true` the siblings carry sizes and LFS data.
- `GET /api/models/<repo>/tree/<rev>[/<path>]`: the file listing (`list_repo_tree`, and
  `snapshot_download` with `recursive=true`).
- `HEAD`/`GET /<repo>/resolve/<rev>/<path>`: the file, with `X-Repo-Commit`, a quoted `ETag`,
  and for LFS files (weights) `X-Linked-Etag` (the sha256) and `X-Linked-Size`. GET honours
  `Range` (206 + `Content-Range`), so an interrupted download can be resumed.

Errors carry the hub's `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound), which
huggingface_hub turns into its typed exceptions. For tests: a throttle in bytes/second per
response, counters of body bytes and requests, a switch to ignore Range, and a switch that
answers every request with one status (404, 500...). `GET /_fake_hub/stats` returns the
counters as JSON for a test that runs the hub as its own process:

    python tests/fake_hub.py --root DIR [--port 0] [--rate BYTES_PER_S]

prints `http://127.0.0.1:PORT` on its first line and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".pt", ".pth", ".onnx", ".ckpt")
LFS_MIN_SIZE = 10 * 1024 * 1024  # the hub's default: bigger files go to LFS whatever their name
PIECE = 64 * 1024  # bytes written at a time (and between throttle sleeps)

API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?/?$")
TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

# Settings of the developer's own environment that would send a client elsewhere: another cache
# (HF_HUB_CACHE wins over HF_HOME), offline mode, a token, another endpoint.
CLIENT_SETTINGS = (
    "HF_ENDPOINT", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH",
    "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT",
)


def client_env(url: str, hf_home: Path, **extra: str) -> dict[str, str]:
    """Environment for a process whose huggingface_hub uses this stand-in and caches in hf_home.

    huggingface_hub reads these once, when it is imported, into `huggingface_hub.constants`
    (and derived values: the URL template, trusted hosts, cache paths), so they must be set
    before the process starts rather than patched in a running one.
    """
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_SETTINGS}
    return {**env, "HF_ENDPOINT": url, "HF_HOME": str(hf_home), **extra}


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    git_oid: str  # git blob sha1 of what git stores: the content, or the LFS pointer
    sha256: str
    lfs: bool
    pointer_size: int

    @property
    def etag(self) -> str:
        """What the hub puts in ETag (and X-Linked-Etag): sha256 for LFS files, else the oid."""
        return self.sha256 if self.lfs else self.git_oid


class HubError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def git_blob_oid(data: bytes) -> str:
    """The id git gives a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def describe(path: str, file: Path) -> RepoFile:
    """A file as the hub describes it, LFS or not (read in pieces: weights can be GBs)."""
    size = file.stat().st_size
    sha256, git_sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    with open(file, "rb") as handle:
        while piece := handle.read(1 << 20):
            sha256.update(piece)
            git_sha1.update(piece)
    if not (path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE):
        return RepoFile(path, size, git_sha1.hexdigest(), sha256.hexdigest(), False, 0)
    pointer = (
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{sha256.hexdigest()}\nsize {size}\n"
    ).encode()  # what git stores for an LFS file
    return RepoFile(path, size, git_blob_oid(pointer), sha256.hexdigest(), True, len(pointer))


class FakeHub:
    """The server, its switches for tests, and what it has served."""

    def __init__(self, root: Path, *, rate: float | None = None, port: int = 0) -> None:
        self.root = Path(root)
        self.rate = rate  # bytes/second per response body; None: as fast as possible
        self.ignore_range = False  # answer Range requests with the whole file (200)
        self.fail: int | None = None  # answer every request with this status
        self.port = port
        self.lock = threading.Lock()
        self.bytes_served: Counter[str] = Counter()  # "<repo>/<path>" -> body bytes sent
        self.requests: Counter[str] = Counter()  # "GET /path" -> count
        self.ranges: list[tuple[str, str]] = []  # ("<repo>/<path>", Range header) seen
        self._sending = 0  # response bodies being written now
        self._described: dict[tuple[str, int, int], RepoFile] = {}
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # --- control ------------------------------------------------------------------

    def start(self) -> FakeHub:
        """Serve on 127.0.0.1 from a background thread."""
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.hub = self
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop serving (responses still being throttled are cut off)."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no file is being sent (a killed client's response notices it is gone)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if not self._sending:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the fake hub was still sending after {timeout} s")
            time.sleep(0.01)

    def reset_counters(self) -> None:
        """Forget what was served so far."""
        with self.lock:
            self.bytes_served.clear()
            self.requests.clear()
            self.ranges.clear()

    def stats(self) -> dict:
        """The counters as plain JSON-able data."""
        with self.lock:
            return {
                "bytes_served": dict(self.bytes_served),
                "requests": dict(self.requests),
                "ranges": [list(pair) for pair in self.ranges],
            }

    # --- repos --------------------------------------------------------------------

    def files(self, repo: str) -> dict[str, RepoFile]:
        """Every file of `repo`, by path."""
        folder = self.root / repo
        if not folder.is_dir() or repo.count("/") != 1:
            raise HubError(404, "RepoNotFound", f"Repository {repo} not found")
        found = {}
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                path = file.relative_to(folder).as_posix()
                stat = file.stat()
                key = (str(file), stat.st_size, stat.st_mtime_ns)
                with self.lock:
                    cached = self._described.get(key)
                if cached is None:
                    cached = describe(path, file)
                    with self.lock:
                        self._described[key] = cached
                found[path] = cached
        return found

    def commit(self, files: dict[str, RepoFile]) -> str:
        """The one commit of a repo: derived from its content, so it changes with it."""
        listing = "".join(f"{f.path}\0{f.git_oid}\n" for f in files.values())
        return hashlib.sha1(listing.encode()).hexdigest()

    def checkout(self, repo: str, revision: str) -> tuple[dict[str, RepoFile], str]:
        """The files and commit id of `repo` at `revision` (main or that commit id)."""
        files = self.files(repo)
        commit = self.commit(files)
        if unquote(revision) not in ("main", commit):
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return files, commit


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a throttled response must not hold up shutdown
    hub: FakeHub

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients killed midway: normal
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects from the hub
    server: _Server

    def log_message(self, format, *args) -> None:  # quiet: tests read their own output
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        with hub.lock:
            hub.requests[f"{self.command} {url.path}"] += 1
        try:
            if hub.fail is not None:
                raise HubError(hub.fail, "", f"fake hub switched to fail with {hub.fail}")
            if url.path == "/_fake_hub/stats":
                return self._json(hub.stats())
            query = parse_qs(url.query)
            if match := RESOLVE.match(url.path):
                return self._resolve(match["repo"], match["rev"], unquote(match["path"]), body)
            if match := TREE.match(url.path):
                return self._tree(match["repo"], match["rev"], unquote(match["path"] or ""), query)
            if match := API.match(url.path):
                return self._info(match["repo"], match["rev"] or "main", query)
            raise HubError(404, "", f"no route for {url.path}")
        except HubError as error:
            self._error(error, body)

    # --- routes -------------------------------------------------------------------

    def _info(self, repo: str, revision: str, query: dict) -> None:
        files, commit = self.server.hub.checkout(repo, revision)
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for f in files.values():
            sibling: dict = {"rfilename": f.path}
            if blobs:
                sibling.update(size=f.size, blobId=f.git_oid)
                if f.lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": f.size,
                                      "pointerSize": f.pointer_size}
            siblings.append(sibling)
        self._json({"_id": commit[:24], "id": repo, "modelId": repo, "sha": commit,
                    "private": False, "gated": False, "disabled": False,
                    "tags": [], "siblings": siblings})

    def _tree(self, repo: str, revision: str, folder: str, query: dict) -> None:
        files, _ = self.server.hub.checkout(repo, revision)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        entries, folders = [], set()
        for f in files.values():
            if not f.path.startswith(prefix):
                continue
            rest = f.path[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                folders.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
            entry = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            entries.append(entry)
        if prefix and not entries and not folders:
            raise HubError(404, "EntryNotFound", f"{folder} does not exist on {revision}")
        dirs = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0,
                 "path": d} for d in sorted(folders)]
        self._json(dirs + entries)

    def _resolve(self, repo: str, revision: str, path: str, body: bool) -> None:
        hub = self.server.hub
        files, commit = hub.checkout(repo, revision)
        if path not in files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision}")
        f = files[path]
        start, end, status = 0, f.size - 1, 200
        requested = self.headers.get("Range")
        if requested and body:
            with hub.lock:
                hub.ranges.append((f"{repo}/{path}", requested))
        if requested and not hub.ignore_range:
            span = _parse_range(requested, f.size)
            if span is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{f.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            (start, end), status = span, 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{f.etag}"')
        self.send_header("X-Repo-Commit", commit)
        if f.lfs:
            self.send_header("X-Linked-Etag", f'"{f.sha256}"')
            self.send_header("X-Linked-Size", str(f.size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{f.size}")
        self.end_headers()
        if body:
            self._send_file(hub.root / repo / path, f"{repo}/{path}", start, end - start + 1)

    # --- helpers ------------------------------------------------------------------

    def _send_file(self, file: Path, key: str, start: int, length: int) -> None:
        hub = self.server.hub
        began, sent = time.monotonic(), 0
        with hub.lock:
            hub._sending += 1
        try:
            with open(file, "rb") as handle:
                handle.seek(start)
                while sent < length:
                    piece = handle.read(min(PIECE, length - sent))
                    if not piece:
                        break
                    self.wfile.write(piece)
                    sent += len(piece)
                    with hub.lock:
                        hub.bytes_served[key] += len(piece)
                    if hub.rate:  # sleep until this many bytes are due at the rate
                        time.sleep(max(0.0, sent / hub.rate - (time.monotonic() - began)))
        finally:
            with hub.lock:
                hub._sending -= 1

    def _json(self, data) -> None:
        payload = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, error: HubError, body: bool) -> None:
        payload = json.dumps({"error": str(error)}).encode()
        self.send_response(error.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if error.code:
            self.send_header("X-Error-Code", error.code)
        self.send_header("X-Error-Message", str(error))
        self.end_headers()
        if body:
            self.wfile.write(payload)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range, or None when it cannot be satisfied."""
    match = RANGE.match(header.strip())
    if not match or not (match[1] or match[2]):
        return None
    if not match[1]:  # bytes=-N: the last N bytes
        first, last = max(0, size - int(match[2])), size - 1
    else:
        first = int(match[1])
        last = min(int(match[2]), size - 1) if match[2] else size - 1
    return (first, last) if first <= last else None


def main(argv: list[str] | None = None) -> None:
    """Serve ROOT until SIGTERM or SIGINT, printing the URL first."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder of <owner>/<name>/ repos")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--rate", type=float, default=None, help="bytes/second per response")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    hub = FakeHub(args.root, rate=args.rate, port=args.port).start()
    print(hub.url, flush=True)
    while not stop.wait(0.5):
        pass
    hub.stop()


if __name__ == "__main__":
    main()
