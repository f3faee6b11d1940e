"""`loader sync`: bring the database and storage in line with the images folder.

A file gone from the folder is hidden, not forgotten: its row and embedding come back when it
reappears (an unplugged drive must not wipe a library); `prune` forgets such files for good.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.imagefile import ImageProblem, Inspection, inspect_image, photo_metadata, prepare_decoders
from shared.lifeline import exit_with_parent
from shared.photo_metadata import PhotoMetadata
from shared.progress import Progress
from shared.storage import Storage, StorageError, thumbnail_key
from shared.store import Catalogue, ImageRecord, KnownFile

from .scan import LocalFile, ScanResult, scan_images

# Rows are written in batches: every FLUSH_EVERY rows or FLUSH_SECONDS, whichever comes first.
# A killed run redoes at most one batch of files (their uploads are idempotent).
FLUSH_EVERY = 256
FLUSH_SECONDS = 0.5
# Files handed to a decoder process at once: fewer round trips, still fine-grained progress.
CHUNK = 4


@dataclass
class SyncReport:
    """What one sync did, for people and for `--json`."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    thumbnails: int = 0
    metadata: int = 0  # unchanged files whose date, camera and place were read (no upload)
    pruned: int = 0
    hidden: int = 0  # rows hidden in this run because their files are gone
    restored: int = 0  # hidden rows shown again because their files are back
    settling: int = 0  # files left for a later pass: changed too recently to be complete
    stopped: bool = False  # a stop was requested before every file was looked at
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def as_dict(self) -> dict:
        """A JSON-ready copy."""
        return asdict(self)

    @property
    def changes(self) -> int:
        """How many rows this run added, changed, dated, hid, restored or pruned."""
        return self.new + self.changed + self.metadata + self.hidden + self.restored + self.pruned


class KnownFailures:
    """Files that failed, with the size and mtime they had: a live library does not read (and
    report) a broken file again on every pass, only once it changes."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, int]] = {}

    def unchanged(self, f: LocalFile) -> bool:
        """Whether `f` failed before as it is now."""
        return self._seen.get(f.key) == (f.byte_size, f.mtime_ns)

    def update(self, files: list[LocalFile], report: SyncReport) -> None:
        """Remember this pass's failures among `files`; forget files that are gone or fixed."""
        by_key = {f.key: f for f in files}
        failed = {item["file"] for item in report.failed}
        self._seen = {key: seen for key, seen in self._seen.items()
                      if key in by_key and (by_key[key].byte_size, by_key[key].mtime_ns) == seen}
        self._seen.update({key: (by_key[key].byte_size, by_key[key].mtime_ns)
                           for key in failed if key in by_key})


def decoder_pool(jobs: int) -> ProcessPoolExecutor:
    """The processes that decode images: a crash in a decoder costs a file, not the run.

    They start from a fresh interpreter (forkserver), never as a fork of a process whose other
    threads (a web server, a model) may hold locks, and leave stopping to their parent.
    """
    context = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_decoder_start,
                               initargs=(os.getpid(),))


def _decoder_start(parent: int) -> None:
    """In each decoder: leave signals to the parent, and exit if the parent is gone."""
    # Ctrl-C (and a service manager's SIGTERM) reach the whole process group: the parent
    # decides when its decoders stop, after the files in hand are recorded.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The process's parent is the fork server, which may outlive the program: watch the program.
    exit_with_parent(program=parent)


@dataclass(frozen=True)
class Outcome:
    """The result of one file: a row to write, a touch, or a failure."""

    file: LocalFile
    kind: str  # new | changed | touched | metadata | thumbnail | failed
    record: ImageRecord | None = None
    error: str = ""
    metadata: PhotoMetadata | None = None  # what a touched file's metadata now says


def run_sync(
    catalogue: Catalogue,
    storage: Storage,
    images_dir: Path,
    *,
    jobs: int,
    max_pixels: int,
    dry_run: bool = False,
    prune: bool = False,
    progress: bool | Progress | None = None,
    settle_s: float = 0.0,
    stop: threading.Event | None = None,
    failures: KnownFailures | None = None,
    decoders: ProcessPoolExecutor | None = None,
) -> SyncReport:
    """Scan, inspect what changed on `jobs` processes, upload, then write rows.

    A live library passes `settle_s` (files changed more recently are left for a later pass:
    they may still be being copied), `stop` (checked between files), `failures` (broken files
    already reported) and a long-lived `decoders` pool. Raises StorageError, before anything is
    read, when `storage` cannot keep originals of `images_dir` where every app finds them.
    """
    problem = storage.folder_problem(images_dir)
    if problem:
        raise StorageError(problem)
    started = time.perf_counter()
    report = SyncReport(dry_run=dry_run)
    scan = scan_images(images_dir)
    report.skipped = scan.skipped
    report.failed.extend({"file": key, "error": why} for key, why in scan.problems)
    known = catalogue.known_files()
    fresh = time.time_ns() - int(settle_s * 1e9)
    settling = {f.key for f in scan.files if settle_s and f.changed_ns > fresh}
    present = [f for f in scan.files if f.key not in settling]
    todo = [f for f in present if _needs_look(f, known.get(f.key))
            and not (failures and failures.unchanged(f))]
    report.settling = len(settling)
    report.unchanged = len(present) - len(todo)
    gone = _gone(known, scan)  # a file being written still exists: it is not gone
    back = [f.key for f in present if f.key in known and known[f.key].missing]

    if dry_run:
        for f in todo:
            row = known.get(f.key)
            kind = "new" if row is None else "metadata" if _wanted(f, row)[3] else "changed"
            setattr(report, kind, getattr(report, kind) + 1)
        report.pruned = len(gone) if prune else 0
    else:
        _process(catalogue, storage, todo, known, report, jobs=jobs, max_pixels=max_pixels,
                 progress=progress, stop=stop, decoders=decoders)
        if not report.stopped:
            report.restored = catalogue.restore(back)
            _forget_or_hide(catalogue, storage, gone, prune, report)
    if failures is not None:
        failures.update(present, report)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _forget_or_hide(catalogue: Catalogue, storage: Storage, gone: list[str], prune: bool,
                    report: SyncReport) -> None:
    """Files gone from the folder: deleted with their thumbnails when pruning, else hidden."""
    if not gone:
        return
    if not prune:
        report.hidden = catalogue.hide(gone)
        return
    _prune(catalogue, storage, gone, report)


def _gone(known: dict[str, KnownFile], scan: ScanResult) -> list[str]:
    """Rows whose files are really gone: not found, and not in a file or folder that this scan
    could not read (a folder's problem is keyed "name/", the top folder's ".")."""
    unreadable = [key for key, _ in scan.problems]
    seen = {f.key for f in scan.files}

    def spared(key: str) -> bool:
        return any(key == bad or bad == "." or (bad.endswith("/") and key.startswith(bad))
                   for bad in unreadable)

    return sorted(key for key in known if key not in seen and not spared(key))


def _prune(catalogue: Catalogue, storage: Storage, gone: list[str], report: SyncReport) -> None:
    """Forget rows of deleted files, then their objects; an object left behind is reported."""
    for key in catalogue.delete_images(gone):
        try:
            storage.delete_thumbnail(key)
        except StorageError as exc:
            report.failed.append({"file": f"thumbnail {key}", "error": f"forgotten, but {exc}"})
    for key in gone:
        try:
            storage.delete_original(key)
        except StorageError as exc:
            report.failed.append({"file": key, "error": f"forgotten, but {exc}"})
    report.pruned = len(gone)


def _needs_look(f: LocalFile, row: KnownFile | None) -> bool:
    if row is None or not row.has_thumbnail or not row.has_metadata:
        return True
    return _changed(f, row)


def _changed(f: LocalFile, row: KnownFile) -> bool:
    return row.byte_size != f.byte_size or row.mtime_ns != f.mtime_ns


# What a decoder process is asked to do with one file: (path, mtime_ns, the hash its row has
# when only a change of content needs the full work, and whether reading the metadata is all).
Wanted = tuple[Path, int, str | None, bool]


def _wanted(f: LocalFile, row: KnownFile | None) -> Wanted:
    if row is None or not row.has_thumbnail:
        return f.path, f.mtime_ns, None, False
    # Same size and mtime, only the metadata missing (a row from before it was read): the
    # file is trusted unchanged as on every sync, and not even hashed.
    return f.path, f.mtime_ns, row.sha256, not _changed(f, row)


def _process(catalogue, storage, todo, known, report, *, jobs, max_pixels, progress, stop,
             decoders) -> None:
    if not todo:
        if isinstance(progress, Progress):
            progress.set_total(0)
            progress.finish("done", quiet=True)
        return
    pending_rows: list[ImageRecord] = []
    pending_touches: list[tuple[str, int, int, PhotoMetadata]] = []

    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        catalogue.upsert_images(pending_rows)
        catalogue.touch_files(pending_touches)
        pending_rows.clear()
        pending_touches.clear()
        last_flush = time.monotonic()

    bar = progress if isinstance(progress, Progress) else Progress(
        "sync", "{done} of {total} files looked at", show=progress)
    bar.set_total(len(todo))
    own_decoders = decoders is None
    decoders = decoder_pool(jobs) if own_decoders else decoders
    movers = ThreadPoolExecutor(max_workers=max(4, jobs * 4))
    futures: list[Future[list[Outcome]]] = [
        movers.submit(_handle_chunk, decoders, storage, todo[i : i + CHUNK], known, max_pixels, stop)
        for i in range(0, len(todo), CHUNK)
    ]
    try:
        for future in as_completed(futures):
            if future.cancelled():
                continue
            # Chunks already started when a stop came still finish and are recorded.
            for outcome in future.result():
                _count(outcome, report)
                if outcome.kind in ("touched", "metadata"):
                    pending_touches.append((outcome.file.key, outcome.file.byte_size,
                                            outcome.file.mtime_ns, outcome.metadata))
                elif outcome.record is not None:
                    pending_rows.append(outcome.record)
                report.bytes_read += outcome.file.byte_size
                bar.update(1)
            if (len(pending_rows) + len(pending_touches) >= FLUSH_EVERY
                    or time.monotonic() - last_flush >= FLUSH_SECONDS):
                flush()
            if stop is not None and stop.is_set() and not report.stopped:
                report.stopped = True
                for waiting in futures:
                    waiting.cancel()
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    finally:
        movers.shutdown(wait=True, cancel_futures=True)
        if own_decoders:
            decoders.shutdown(wait=True, cancel_futures=True)
        bar.finish("stopped" if report.stopped else "done")  # first: a database gone away
        flush()  # makes this raise; whatever finished uploading is recorded, even when interrupted


def _handle_chunk(decoders: ProcessPoolExecutor, storage: Storage, files: list[LocalFile],
                  known: dict[str, KnownFile], max_pixels: int,
                  stop: threading.Event | None) -> list[Outcome]:
    """Inspect a few files on a decoder process, then upload each and say what its row should be.

    A chunk whose turn comes after a stop was asked is not started (nothing of it is looked at).
    """
    if stop is not None and stop.is_set():
        return []
    rows = [known.get(f.key) for f in files]
    wanted = [_wanted(f, row) for f, row in zip(files, rows)]
    try:
        results = decoders.submit(_inspect_many, wanted, max_pixels).result()
    except Exception as exc:  # a crashed decoder process must not stop the other files
        results = [f"{type(exc).__name__}: {exc}"] * len(files)
    return [_finish_file(storage, f, row, seen) for f, row, seen in zip(files, rows, results)]


def _inspect_many(wanted: list[Wanted], max_pixels: int) -> list[Inspection | str]:
    """Runs in a decoder process: each file's Inspection, or why it is unusable."""
    results: list[Inspection | str] = []
    for path, mtime_ns, known_sha, metadata_only in wanted:
        try:
            if metadata_only:
                prepare_decoders(max_pixels)
                results.append(Inspection(sha256=known_sha or "", byte_size=0, unchanged=True,
                                          metadata=photo_metadata(path, mtime_ns)))
                continue
            results.append(inspect_image(path, max_pixels, known_sha, mtime_ns=mtime_ns))
        except ImageProblem as exc:
            results.append(str(exc))
        except Exception as exc:  # an unexpected decoder error is this file's problem only
            results.append(f"{type(exc).__name__}: {exc}")
    return results


def _finish_file(storage: Storage, f: LocalFile, row: KnownFile | None, seen: Inspection | str) -> Outcome:
    """Upload what is new and build the row; a failure names the reason."""
    if isinstance(seen, str):
        return Outcome(f, "failed", error=seen)
    if seen.unchanged:
        kind = "touched" if row is None or _changed(f, row) else "metadata"
        return Outcome(f, kind, metadata=seen.metadata)
    try:
        thumb = thumbnail_key(seen.sha256)
        storage.put_original(f.key, f.path, seen.content_type)
        storage.put_thumbnail(thumb, seen.thumbnail)
    except StorageError as exc:
        return Outcome(f, "failed", error=str(exc))
    record = ImageRecord(f.key, seen.width, seen.height, seen.byte_size, seen.sha256,
                         seen.format, f.mtime_ns, thumb, seen.metadata)
    if row is None:
        kind = "new"
    elif row.sha256 == seen.sha256:
        kind = "thumbnail"
    else:
        kind = "changed"
    return Outcome(f, kind, record)


def _count(outcome: Outcome, report: SyncReport) -> None:
    if outcome.kind == "failed":
        report.failed.append({"file": outcome.file.key, "error": outcome.error})
    elif outcome.kind in ("touched", "metadata", "thumbnail"):
        report.unchanged += 1
        report.thumbnails += outcome.kind == "thumbnail"
        report.metadata += outcome.kind == "metadata"
    else:
        setattr(report, outcome.kind, getattr(report, outcome.kind) + 1)
