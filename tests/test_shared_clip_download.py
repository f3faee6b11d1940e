"""Fetching a CLIP checkpoint: the real huggingface_hub client against tests/fake_hub.py.

Each client runs in its own process with HF_ENDPOINT and HF_HOME set before huggingface_hub is
imported (it reads them at import, and transformers has already imported it in this one).
"""

from __future__ import annotations

import hashlib
import json
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fake_hub import FakeHub, client_env

from shared.clip.download import CHUNK
from shared.clip.weights import NEEDED_FILES, WEIGHTS_FILE
from shared.settings import DEFAULT_CLIP_MODEL as REPO

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_KEY = f"{REPO}/{WEIGHTS_FILE}"

CLIENT = """
import json, sys
from shared.clip.download import cached_checkpoint, download_checkpoint, model_files
from shared.clip.weights import ModelNotAvailable, resolve_checkpoint

def say(**fields):
    print(json.dumps(fields), flush=True)

def progress(p):
    say(done=p.done_bytes, total=p.total_bytes, file=p.current_file)

action, repo = sys.argv[1:]
try:
    if action == "files":
        say(files=[[f.path, f.size] for f in model_files(repo)])
    elif action == "download":
        say(path=str(download_checkpoint(repo, on_progress=progress)))
    elif action == "stop-midway":  # stop from the callback, as a SIGTERM handler would
        class Stop(Exception):
            pass

        def stop_after_a_mib(p):
            if p.current_file == "model.safetensors" and p.done_bytes >= 2 ** 20:
                raise Stop(p.done_bytes)

        try:
            download_checkpoint(repo, on_progress=stop_after_a_mib)
        except Stop as stop:
            say(stopped=stop.args[0])
    elif action == "cached":
        say(path=str(cached_checkpoint(repo) or ""))
    elif action == "resolve":
        say(path=str(resolve_checkpoint(repo, download=False)))
except ModelNotAvailable as exc:
    say(error=str(exc))
"""


def start_client(action: str, url: str, hf_home: Path, repo: str = REPO, **env: str):
    """A client process doing `action`; its stdout is one JSON object per line."""
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, action, repo],
        env=client_env(url, hf_home, PYTHONPATH=str(ROOT), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def client(action: str, url: str, hf_home: Path, repo: str = REPO, **env: str) -> list[dict]:
    """Run a client to the end and return what it said."""
    process = start_client(action, url, hf_home, repo, **env)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def repo_file(hub: FakeHub, name: str) -> Path:
    return hub.root / REPO / name


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_gets(hub: FakeHub) -> list[str]:
    """The file downloads (resolve GETs) the stand-in has answered."""
    return [key for key in hub.requests if key.startswith("GET ") and "/resolve/" in key]


def blobs(hf_home: Path) -> Path:
    return hf_home / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs"


def wait_for(condition, timeout: float, what: str):
    """Poll `condition` until it returns something true, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_sizes_are_known_before_downloading(fake_hub, tmp_path):
    said = client("files", fake_hub.url, tmp_path / "hf")
    present = [name for name in NEEDED_FILES if repo_file(fake_hub, name).is_file()]
    assert WEIGHTS_FILE in present and "config.json" in present
    assert said == [
        {"files": [[name, repo_file(fake_hub, name).stat().st_size] for name in present]}
    ]
    assert file_gets(fake_hub) == []  # nothing was downloaded to tell the sizes


def test_fresh_download_is_then_found_offline(fake_hub, tmp_path):
    hf_home = tmp_path / "hf"
    assert client("cached", fake_hub.url, hf_home) == [{"path": ""}]

    folder = Path(client("download", fake_hub.url, hf_home)[-1]["path"])

    assert folder.is_relative_to(hf_home / "hub")
    for name in ("config.json", WEIGHTS_FILE, "tokenizer.json"):
        assert (folder / name).read_bytes() == repo_file(fake_hub, name).read_bytes()
    assert not list(blobs(hf_home).glob("*.incomplete"))
    fake_hub.stop()  # nothing to ask any more
    offline = {"HF_HUB_OFFLINE": "1"}
    assert client("resolve", fake_hub.url, hf_home, **offline) == [{"path": str(folder)}]
    assert client("cached", fake_hub.url, hf_home, **offline) == [{"path": str(folder)}]


def test_cached_checkpoint_refuses_a_snapshot_missing_a_file(fake_hub, tmp_path):
    hf_home = tmp_path / "hf"
    folder = Path(client("download", fake_hub.url, hf_home)[-1]["path"])
    (folder / "tokenizer.json").unlink()
    assert client("cached", fake_hub.url, hf_home, HF_HUB_OFFLINE="1") == [{"path": ""}]


def test_progress_is_reported_and_ends_at_the_total(fake_hub, tmp_path):
    said = client("download", fake_hub.url, tmp_path / "hf")
    events, last = said[:-1], said[-1]
    assert "path" in last
    total = sum(
        repo_file(fake_hub, name).stat().st_size
        for name in NEEDED_FILES
        if repo_file(fake_hub, name).is_file()
    )
    assert {event["total"] for event in events} == {total}
    done = [event["done"] for event in events]
    assert done == sorted(done) and done[-1] == total
    weights_events = [event for event in events if event["file"] == WEIGHTS_FILE]
    assert len(weights_events) >= repo_file(fake_hub, WEIGHTS_FILE).stat().st_size // CHUNK


def test_second_download_transfers_nothing(fake_hub, tmp_path):
    hf_home = tmp_path / "hf"
    first = client("download", fake_hub.url, hf_home)[-1]
    fake_hub.reset_counters()

    second = client("download", fake_hub.url, hf_home)

    assert second[-1] == first
    assert file_gets(fake_hub) == [] and sum(fake_hub.bytes_served.values()) == 0
    assert second[0]["done"] > 0  # what is cached counts as done from the start


def kill_midway(hub: FakeHub, hf_home: Path) -> int:
    """Start a throttled download, SIGKILL it once some weights are on disk; the partial size."""
    hub.rate = 2_000_000  # the tiny weights (~6.5 MB) take ~3 s
    process = start_client("download", hub.url, hf_home)
    try:
        partial = wait_for(
            lambda: [p for p in blobs(hf_home).glob("*.incomplete") if p.stat().st_size >= CHUNK],
            timeout=20,
            what="part of the weights on disk",
        )[0]
    finally:
        process.kill()
        process.communicate(timeout=10)
    hub.wait_idle()  # the killed client's response is over before counting again
    hub.rate = None
    hub.reset_counters()
    return partial.stat().st_size


def test_killed_download_resumes_where_it_stopped(fake_hub, tmp_path):
    hf_home = tmp_path / "hf"
    size = repo_file(fake_hub, WEIGHTS_FILE).stat().st_size
    kept = kill_midway(fake_hub, hf_home)
    assert 0 < kept < size

    said = client("download", fake_hub.url, hf_home)

    assert fake_hub.ranges == [(WEIGHTS_KEY, f"bytes={kept}-")]
    assert fake_hub.bytes_served[WEIGHTS_KEY] == size - kept
    first_weights_event = next(e for e in said if e.get("file") == WEIGHTS_FILE)
    assert first_weights_event["done"] >= kept  # the kept part counts as done
    folder = Path(said[-1]["path"])
    assert sha256(folder / WEIGHTS_FILE) == sha256(repo_file(fake_hub, WEIGHTS_FILE))
    assert not list(blobs(hf_home).glob("*.incomplete"))


def test_stopping_from_the_callback_keeps_the_partial_file(fake_hub, tmp_path):
    hf_home = tmp_path / "hf"
    [said] = client("stop-midway", fake_hub.url, hf_home)
    [partial] = blobs(hf_home).glob("*.incomplete")
    kept = partial.stat().st_size
    assert said["stopped"] == kept + repo_file(fake_hub, "config.json").stat().st_size
    assert 0 < kept < repo_file(fake_hub, WEIGHTS_FILE).stat().st_size
    fake_hub.reset_counters()

    client("download", fake_hub.url, hf_home)
    assert fake_hub.ranges == [(WEIGHTS_KEY, f"bytes={kept}-")]


def test_hub_ignoring_range_still_gives_the_exact_file(fake_hub, tmp_path):
    hf_home = tmp_path / "hf"
    size = repo_file(fake_hub, WEIGHTS_FILE).stat().st_size
    kill_midway(fake_hub, hf_home)
    fake_hub.ignore_range = True  # answers 200 with the whole file to the resume

    folder = Path(client("download", fake_hub.url, hf_home)[-1]["path"])

    assert fake_hub.bytes_served[WEIGHTS_KEY] == size
    assert sha256(folder / WEIGHTS_FILE) == sha256(repo_file(fake_hub, WEIGHTS_FILE))


def test_corrupt_partial_file_is_caught_and_dropped(fake_hub, tmp_path):
    hf_home = tmp_path / "hf"
    blobs(hf_home).mkdir(parents=True)
    weights_sha = sha256(repo_file(fake_hub, WEIGHTS_FILE))
    (blobs(hf_home) / f"{weights_sha}.incomplete").write_bytes(b"\0" * CHUNK)

    said = client("download", fake_hub.url, hf_home)
    assert "does not match its sha256" in said[-1]["error"]
    assert not list(blobs(hf_home).glob("*.incomplete"))

    folder = Path(client("download", fake_hub.url, hf_home)[-1]["path"])  # starts over
    assert sha256(folder / WEIGHTS_FILE) == weights_sha


def test_two_processes_download_the_weights_once(fake_hub, tmp_path):
    hf_home = tmp_path / "hf"
    fake_hub.rate = 4_000_000  # slow enough that both reach the weights while one fetches them
    first, second = (start_client("download", fake_hub.url, hf_home) for _ in range(2))
    outs = [process.communicate(timeout=60) for process in (first, second)]

    paths = {json.loads(out.splitlines()[-1])["path"] for out, _ in outs}
    assert len(paths) == 1
    size = repo_file(fake_hub, WEIGHTS_FILE).stat().st_size
    assert fake_hub.bytes_served[WEIGHTS_KEY] == size  # the second waited for the first
    assert sha256(Path(paths.pop()) / WEIGHTS_FILE) == sha256(repo_file(fake_hub, WEIGHTS_FILE))


def one_line_error(said: list[dict]) -> str:
    assert len(said) == 1 and "error" in said[0], said
    message = said[0]["error"]
    assert "\n" not in message and "Traceback" not in message
    return message


def test_unknown_repo_gives_a_clear_error(fake_hub, tmp_path):
    message = one_line_error(client("download", fake_hub.url, tmp_path / "hf", repo="openai/nope"))
    assert message == (
        f"could not list the files of the Hugging Face repo 'openai/nope' at {fake_hub.url}: "
        "repository not found (or private: set HF_TOKEN)"
    )


@pytest.mark.parametrize("status", [404, 500])
def test_failing_hub_gives_a_clear_error(fake_hub, tmp_path, status):
    fake_hub.fail = status
    message = one_line_error(client("download", fake_hub.url, tmp_path / "hf"))
    assert message.startswith(f"could not list the files of the Hugging Face repo '{REPO}'")
    assert f"at {fake_hub.url}: the hub answered HTTP {status}" in message


def test_unreachable_hub_gives_a_clear_error(tmp_path):
    # Port 9 on loopback refuses connections at once: an unreachable hub without waiting.
    message = one_line_error(client("download", "http://127.0.0.1:9", tmp_path / "hf"))
    assert message.startswith(
        f"could not list the files of the Hugging Face repo '{REPO}' at http://127.0.0.1:9: "
        "cannot connect ("
    )


def test_repo_without_safetensors_is_refused_before_downloading(tmp_path):
    old = tmp_path / "hub" / "someone" / "old-clip"
    old.mkdir(parents=True)
    (old / "config.json").write_text("{}")
    (old / "pytorch_model.bin").write_bytes(b"\0" * 100)
    hub = FakeHub(tmp_path / "hub").start()
    try:
        said = client("download", hub.url, tmp_path / "hf", repo="someone/old-clip")
    finally:
        hub.stop()
    assert one_line_error(said) == (
        f"the Hugging Face repo 'someone/old-clip' at {hub.url} has no model.safetensors: "
        "it is not a CLIP checkpoint in safetensors format"
    )
    assert file_gets(hub) == []


def test_stand_in_runs_as_its_own_process(hub_repos, tmp_path):
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_hub.py"), "--root", str(hub_repos)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert select.select([server.stdout], [], [], 10)[0], "no URL printed in 10 s"
        url = server.stdout.readline().strip()  # the first line, printed once it listens
        assert url.startswith("http://127.0.0.1:")
        said = client("files", url, tmp_path / "hf")
        assert [name for name, _ in said[0]["files"]][:2] == ["config.json", WEIGHTS_FILE]
        with urllib.request.urlopen(f"{url}/_fake_hub/stats", timeout=10) as answer:
            assert json.load(answer)["bytes_served"] == {}
    finally:
        server.terminate()  # SIGTERM: a clean stop
        assert server.wait(timeout=10) == 0
