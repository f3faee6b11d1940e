"""Fetch a CLIP checkpoint from the Hugging Face hub: its size first, progress as it goes, and a
transfer that a killed process resumes instead of starting over.

Why not `hf_hub_download` alone: huggingface_hub 2.x downloads each file into a temporary
file with a per-process random name and deletes it on failure, so a killed download restarts
from zero (a 1.7 GB restart on a slow line). Here each file goes to `blobs/<etag>.incomplete`
in the standard cache, continued with an HTTP Range request, checked (size, and sha256 for LFS
files, whose ETag is their sha256) and renamed to `blobs/<etag>`, the name the cache's
documented layout gives it. A final `snapshot_download` then finds every blob present,
downloads nothing, and writes the snapshot links, `refs/<revision>` and the file listing it
uses to tell later offline loads that the snapshot is complete.

`on_progress` is called after every MiB written (and once per file already cached); an
exception raised from it stops the download where it is, keeping the partial file for the next
call: that is how a caller stops it early (on SIGTERM, say). Two processes fetching the same file
take turns on a lock of its partial file: the second finds the blob and fetches nothing.

Only huggingface_hub's public API is used: `HfApi.model_info`, `hf_hub_url`,
`get_hf_file_metadata`, `get_session`, `build_hf_headers`, `hf_raise_for_status`,
`snapshot_download` and `constants`. Locking uses `fcntl` (macOS and Linux).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx2
from huggingface_hub import (
    HfApi,
    constants,
    get_hf_file_metadata,
    get_session,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status
from tqdm.auto import tqdm

from shared.clip.weights import NEEDED_FILES, WEIGHTS_FILE, ModelNotAvailable

CHUNK = 1024 * 1024  # bytes per write and per progress report
ATTEMPTS = 3  # tries per file when the connection drops midway (each resumes)
REQUIRED = ("config.json", WEIGHTS_FILE)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
HUB_ERRORS = (OSError, ValueError, EntryNotFoundError, httpx2.HTTPError)


@dataclass(frozen=True)
class RemoteFile:
    """A file of a hub repo and its size in bytes."""

    path: str
    size: int


@dataclass(frozen=True)
class DownloadProgress:
    """Bytes of the checkpoint on disk so far, out of all, and the file being fetched."""

    done_bytes: int
    total_bytes: int
    current_file: str


ProgressCallback = Callable[[DownloadProgress], None]


def model_files(repo_id: str, revision: str = "main") -> list[RemoteFile]:
    """The needed files that the repo has, with their sizes, without downloading any."""
    with _unavailable_as(repo_id, "list the files of"):
        # model_info makes one request; list_repo_tree retries a refused connection for ~20 s.
        info = HfApi().model_info(
            repo_id, revision=revision, files_metadata=True, timeout=constants.HF_HUB_ETAG_TIMEOUT
        )
    sizes = {
        s.rfilename: s.lfs.size if s.lfs is not None else s.size for s in info.siblings or []
    }
    return [RemoteFile(name, int(sizes[name] or 0)) for name in NEEDED_FILES if name in sizes]


def cached_checkpoint(repo_id: str, revision: str = "main") -> Path | None:
    """The cached snapshot folder if it holds every needed file of the repo, else None (offline)."""
    try:
        # Offline, snapshot_download checks the folder against the file listing that the last
        # download cached, so a folder missing a needed file is refused.
        folder = Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=NEEDED_FILES, local_files_only=True
            )
        )
    except (OSError, ValueError, EntryNotFoundError):
        return None
    return folder if all((folder / name).is_file() for name in REQUIRED) else None


def download_checkpoint(
    repo_id: str, on_progress: ProgressCallback | None = None, revision: str = "main"
) -> Path:
    """Download the repo's needed files into the Hugging Face cache, resuming partial ones."""
    files = model_files(repo_id, revision)
    missing = [name for name in REQUIRED if name not in {f.path for f in files}]
    if missing:
        raise ModelNotAvailable(
            f"the Hugging Face repo {repo_id!r} at {constants.ENDPOINT} has no "
            f"{', '.join(missing)}: it is not a CLIP checkpoint in safetensors format"
        )
    progress = _Progress(sum(f.size for f in files), on_progress)
    with _unavailable_as(repo_id, "download"):
        blobs = _blobs_folder(repo_id)
        for file in files:
            _fetch(repo_id, revision, file, blobs, progress)
        # Every blob is in place: this only links them into the snapshot and records it.
        folder = snapshot_download(
            repo_id, revision=revision, allow_patterns=NEEDED_FILES, tqdm_class=_Silent
        )
    return Path(folder)


class _Progress:
    """Counts bytes on disk and tells the caller."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self.callback = callback

    def advance(self, current_file: str, count: int) -> None:
        self.done += count
        if self.callback is not None:
            self.callback(DownloadProgress(self.done, self.total, current_file))


class _ShortRead(OSError):
    """The server closed the response before the whole file arrived."""


class _Silent(tqdm):
    """No progress bars from snapshot_download: progress is reported through the callback."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _blobs_folder(repo_id: str) -> Path:
    """`<cache>/models--<owner>--<name>/blobs`, as the cache layout documents it."""
    return Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "blobs"


def _fetch(repo_id: str, revision: str, file: RemoteFile, blobs: Path, progress: _Progress) -> None:
    """Put one file's blob into the cache, continuing a partial download if there is one."""
    url = hf_hub_url(repo_id, file.path, revision=revision)
    meta = get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    if not meta.etag:
        raise OSError(f"the hub sent no ETag for {file.path}")
    size = meta.size if meta.size is not None else file.size
    blob = blobs / meta.etag
    if blob.is_file():  # already cached (perhaps by an earlier revision)
        progress.advance(file.path, size)
        return
    blobs.mkdir(parents=True, exist_ok=True)
    partial = blobs / f"{meta.etag}.incomplete"
    with _locked(partial) as handle:
        if blob.is_file():  # another process finished it while this one waited
            partial.unlink(missing_ok=True)
            progress.advance(file.path, size)
            return
        for attempt in range(ATTEMPTS):
            try:
                digest = _transfer(url, handle, size, file.path, progress)
                break
            except (httpx2.TransportError, _ShortRead):
                if attempt == ATTEMPTS - 1:
                    raise
                progress.advance(file.path, -handle.seek(0, os.SEEK_END))
                time.sleep(1)
        if SHA256.match(meta.etag) and digest.hexdigest() != meta.etag:
            partial.unlink(missing_ok=True)
            raise OSError(f"{file.path} does not match its sha256 after download: try again")
        os.replace(partial, blob)


@contextmanager
def _locked(partial: Path) -> Iterator[BinaryIO]:
    """The partial file, opened for appending and locked against other processes."""
    while True:
        handle = open(partial, "ab+")  # noqa: SIM115  (closed below or by the caller's with)
        fcntl.flock(handle, fcntl.LOCK_EX)  # released on close, and when the process dies
        try:
            if os.stat(partial).st_ino == os.fstat(handle.fileno()).st_ino:
                break  # still the file on disk (the last holder did not rename or delete it)
        except FileNotFoundError:
            pass
        handle.close()
    with handle:
        yield handle


def _transfer(url: str, handle: BinaryIO, size: int, name: str, progress: _Progress):
    """Append the rest of the file to `handle` from where it stops; return its sha256 object."""
    have = handle.seek(0, os.SEEK_END)
    if have > size:  # cannot be a prefix of this file
        handle.truncate(0)
        have = 0
    digest = _hash_prefix(handle, have)
    progress.advance(name, have)
    if have == size:
        return digest
    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"  # byte ranges of the file itself, not of a gzip
    if have:
        headers["Range"] = f"bytes={have}-"
    timeout = constants.HF_HUB_DOWNLOAD_TIMEOUT
    with get_session().stream("GET", url, headers=headers, timeout=timeout) as response:
        hf_raise_for_status(response)
        if have and response.status_code != 206:  # Range ignored: the whole file is coming
            handle.truncate(0)
            progress.advance(name, -have)
            have, digest = 0, hashlib.sha256()
        for chunk in response.iter_bytes(CHUNK):
            handle.write(chunk)
            handle.flush()  # what arrived is on disk if the process is killed next
            digest.update(chunk)
            have += len(chunk)
            progress.advance(name, len(chunk))
    if have != size:
        raise _ShortRead(f"{name}: the connection ended after {have} of {size} bytes")
    return digest


def _hash_prefix(handle: BinaryIO, length: int):
    """sha256 of the first `length` bytes already in the file."""
    digest = hashlib.sha256()
    handle.seek(0)
    while handle.tell() < length:
        digest.update(handle.read(min(CHUNK, length - handle.tell())))
    handle.seek(0, os.SEEK_END)
    return digest


@contextmanager
def _unavailable_as(repo_id: str, action: str) -> Iterator[None]:
    """Turn the hub's and the network's errors into ModelNotAvailable with a one-line reason."""
    try:
        yield
    except ModelNotAvailable:
        raise
    except HUB_ERRORS as exc:
        raise ModelNotAvailable(
            f"could not {action} the Hugging Face repo {repo_id!r} at {constants.ENDPOINT}: "
            f"{_reason(exc)}"
        ) from exc


def _reason(exc: BaseException) -> str:
    """Why a hub call failed, in a few words on one line."""
    if isinstance(exc, GatedRepoError):
        return "the repo is gated: accept its terms on the hub and set HF_TOKEN"
    if isinstance(exc, RepositoryNotFoundError):
        return "repository not found (or private: set HF_TOKEN)"
    if isinstance(exc, RevisionNotFoundError):
        return "revision not found"
    if isinstance(exc, RemoteEntryNotFoundError):
        return "file not found"
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return f"the hub answered HTTP {exc.response.status_code}"
    if isinstance(exc, OfflineModeIsEnabled):
        return "downloads are off (HF_HUB_OFFLINE is set)"
    if isinstance(exc, httpx2.ConnectError):
        return f"cannot connect ({_one_line(exc)})"
    if isinstance(exc, httpx2.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    return f"{type(exc).__name__}: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text or "no details"
