"""A local stand-in for the parts of Replicate's HTTP API that the `replicate` client uses.

Predictions (for a version or a model), polling, and file uploads, served on 127.0.0.1 by a
threaded server. Embeddings are derived from the input (an uploaded file's SHA-256, a URL,
or a text), so results can be checked. Faults can be switched on: 429 with Retry-After,
500s, slow answers, failed predictions, wrong-length output, malformed JSON, and a
token-bucket rate limit with added latency for benchmarks.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

KRTHR = "krthr/clip-embeddings"
KRTHR_VERSION = "1c0371070cb827ec3c7f2f28adcdde54b50dcd239aa6faea0bc98b174ef03fb4"
FEATURES = "andreasjansson/clip-features"
FEATURES_VERSION = "75b33f253f7714a281ad3e9b28f63e3232d583716ef6718f2e46641077ea040a"
TOKEN = "r8_fake_token_for_tests"
FAULTS = ("throttle", "error500", "slow", "failed", "wrong_dim", "malformed")


def fake_vector(key: str, dim: int = 768) -> np.ndarray:
    """The (not normalised) embedding the fake model gives the item `key`."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return (np.random.default_rng(seed).standard_normal(dim) * 3.0).astype(np.float32)


def unit(vector: np.ndarray) -> np.ndarray:
    """`vector` scaled to length 1, as the embedder should return it."""
    return vector / np.linalg.norm(vector)


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    input: dict
    output: object
    error: str | None
    ready_at: float
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def as_json(self, base_url: str) -> dict:
        done = time.monotonic() >= self.ready_at
        status = ("failed" if self.error else "succeeded") if done else "starting"
        return {
            "id": self.id, "model": self.model, "version": self.version, "status": status,
            "input": self.input, "output": self.output if done and not self.error else None,
            "error": self.error if done else None, "logs": "", "metrics": {},
            "created_at": self.created_at, "started_at": self.created_at,
            "completed_at": self.created_at if done else None,
            "urls": {"get": f"{base_url}/v1/predictions/{self.id}",
                     "cancel": f"{base_url}/v1/predictions/{self.id}/cancel"},
        }


class FakeReplicate:
    """The server, its switchable faults, and what it has seen."""

    def __init__(self, *, dim: int = 768, token: str = TOKEN) -> None:
        self.dim = dim
        self.token = token
        self.latency = 0.0  # seconds each prediction takes
        self.per_minute: float | None = None  # prediction creates allowed per minute
        self.burst = 5.0  # bucket size of that limit
        self.retry_after = "1"  # what a queued `throttle` fault says
        self.slow_seconds = 2.0  # how long a `slow` fault stalls before answering
        self.fail_when: tuple[str, ...] = ()  # items containing any of these fail
        self.lock = threading.Lock()
        self.queued: deque[str] = deque()
        self.predicted: Counter[str] = Counter()  # successful predictions per item key
        self.stats: Counter[str] = Counter()
        self.files: dict[str, tuple[bytes, str]] = {}
        self.predictions: dict[str, Prediction] = {}
        self._ids = itertools.count(1)
        self._tokens = 0.0
        self._filled = time.monotonic()
        self.app = self._make_app()
        self._server = None
        self._thread = None
        self.url = ""

    # --- control ------------------------------------------------------------------

    def start(self) -> "FakeReplicate":
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()

    def queue(self, fault: str, times: int = 1) -> None:
        """Apply `fault` to the next `times` prediction creates, after those already queued."""
        assert fault in FAULTS, fault
        with self.lock:
            self.queued.extend([fault] * times)

    def limit(self, per_minute: float, burst: float = 5.0) -> None:
        """Throttle prediction creates to `per_minute`, as Replicate does (429 + Retry-After)."""
        with self.lock:
            self.per_minute, self.burst = per_minute, burst
            self._tokens, self._filled = burst, time.monotonic()

    def file_key(self, data: bytes) -> str:
        """The item key under which an uploaded file's embedding is made."""
        return "sha256:" + hashlib.sha256(data).hexdigest()

    # --- the API ------------------------------------------------------------------

    def _make_app(self) -> Flask:
        app = Flask(__name__)

        @app.before_request
        def check_token():
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return jsonify({"detail": "Invalid token.", "status": 401}), 401

        @app.post("/v1/predictions")
        def create_for_version():
            body = request.get_json()
            model = {KRTHR_VERSION: KRTHR, FEATURES_VERSION: FEATURES}.get(body.get("version"))
            if model is None:
                return jsonify({"detail": "Invalid version or not permitted", "status": 422}), 422
            return self._create(model, body["version"], body.get("input") or {})

        @app.post("/v1/models/<owner>/<name>/predictions")
        def create_for_model(owner, name):
            model = f"{owner}/{name}"
            if model not in (KRTHR, FEATURES):
                return jsonify({"detail": "Not found.", "status": 404}), 404
            version = KRTHR_VERSION if model == KRTHR else FEATURES_VERSION
            return self._create(model, version, (request.get_json() or {}).get("input") or {})

        @app.get("/v1/predictions/<pid>")
        def get_prediction(pid):
            self._count("gets")
            prediction = self.predictions.get(pid)
            if prediction is None:
                return jsonify({"detail": "Not found.", "status": 404}), 404
            return jsonify(prediction.as_json(self.url))

        @app.get("/v1/models/<owner>/<name>/versions/<version>")
        def get_version(owner, name, version):
            return jsonify({"id": version, "created_at": "2024-01-01T00:00:00Z",
                            "cog_version": "0.9.0", "openapi_schema": {}})

        @app.post("/v1/files")
        def upload():
            part = request.files["content"]
            data = part.read()
            fid = f"file{next(self._ids)}"
            with self.lock:
                self.files[fid] = (data, part.mimetype)
                self.stats["uploads"] += 1
            return jsonify({
                "id": fid, "name": part.filename, "content_type": part.mimetype, "size": len(data),
                "etag": hashlib.md5(data).hexdigest(), "checksums": {}, "metadata": {},
                "created_at": datetime.now(timezone.utc).isoformat(), "expires_at": None,
                "urls": {"get": f"{self.url}/v1/files/{fid}/download"},
            }), 201

        @app.get("/v1/files/<fid>/download")
        def download(fid):
            data, mimetype = self.files[fid]
            return Response(data, mimetype=mimetype)

        return app

    def _count(self, what: str) -> None:
        with self.lock:
            self.stats[what] += 1

    def _create(self, model: str, version: str, input: dict):
        self._count("creates")
        if (wait := self._throttled()) is not None:
            self._count("throttled")
            return _throttle(wait, f"Request was throttled. Your rate limit resets in ~{wait}s.")
        fault = self._next_fault()
        if fault == "throttle":
            self._count("throttled")
            return _throttle(self.retry_after, "Request was throttled. Expected available in 1 second.")
        if fault == "error500":
            return jsonify({"detail": "Internal server error", "status": 500}), 500
        if fault == "slow":
            time.sleep(self.slow_seconds)
        if fault == "malformed":
            return Response('{"id": "p1", "status": "succ', status=201, mimetype="application/json")
        keys = self._keys(model, input)
        error = f"the model could not read {keys[0]}" if fault == "failed" or self._fails(keys) else None
        dim = self.dim - 1 if fault == "wrong_dim" else self.dim
        vectors = [fake_vector(key, dim).tolist() for key in keys]
        output = (
            {"embedding": vectors[0]} if model == KRTHR
            else [{"input": line, "embedding": v} for line, v in zip(input["inputs"].split("\n"), vectors)]
        )
        prediction = Prediction(f"p{next(self._ids)}", model, version, input, output, error,
                                ready_at=time.monotonic() + self.latency)
        with self.lock:
            self.predictions[prediction.id] = prediction
            if not error:
                self.predicted.update(keys)
        wait = _prefer_wait(request.headers.get("Prefer"))
        if wait is not None and self.latency <= wait:
            time.sleep(self.latency)
        return jsonify(prediction.as_json(self.url)), 201

    def _keys(self, model: str, input: dict) -> list[str]:
        if model == KRTHR:
            items = [input.get("image") or input.get("text") or ""]
        else:
            items = input.get("inputs", "").split("\n")
        return [self._key(item) for item in items]

    def _key(self, item: str) -> str:
        prefix = f"{self.url}/v1/files/"
        if item.startswith(prefix):
            return self.file_key(self.files[item[len(prefix):].split("/")[0]][0])
        return item

    def _fails(self, keys: list[str]) -> bool:
        return any(marker in key for key in keys for marker in self.fail_when)

    def _next_fault(self) -> str | None:
        with self.lock:
            return self.queued.popleft() if self.queued else None

    def _throttled(self) -> int | None:
        """Seconds until the next token when the bucket is empty, else None (a token taken)."""
        with self.lock:
            if self.per_minute is None:
                return None
            rate = self.per_minute / 60.0
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._filled) * rate)
            self._filled = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return max(1, math.ceil((1.0 - self._tokens) / rate))


def _throttle(retry_after, detail: str):
    response = jsonify({"detail": detail, "status": 429})
    response.status_code = 429
    response.headers["Retry-After"] = str(retry_after)
    return response


def _prefer_wait(header: str | None) -> float | None:
    if not header or not header.startswith("wait"):
        return None
    _, _, seconds = header.partition("=")
    return float(seconds) if seconds else 60.0
