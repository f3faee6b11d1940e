"""`loader sync`: bring the database and storage in line with the images folder."""

from __future__ import annotations

import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from shared.imagefile import ImageProblem, Inspection, inspect_image, photo_metadata, prepare_decoders
from shared.lifeline import exit_with_parent
from shared.photo_metadata import PhotoMetadata
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
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def as_dict(self) -> dict:
        """A JSON-ready copy."""
        return asdict(self)


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
    progress: bool | None = None,
) -> SyncReport:
    """Scan, inspect what changed on `jobs` processes, upload, then write rows.

    Raises StorageError, before anything is read, when `storage` cannot keep originals of
    `images_dir` where every app finds them.
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
    todo = [f for f in scan.files if _needs_look(f, known.get(f.key))]
    report.unchanged = len(scan.files) - len(todo)
    gone = _gone(known, scan)

    if dry_run:
        for f in todo:
            row = known.get(f.key)
            kind = "new" if row is None else "metadata" if _wanted(f, row)[3] else "changed"
            setattr(report, kind, getattr(report, kind) + 1)
        report.pruned = len(gone) if prune else 0
    else:
        _process(catalogue, storage, todo, known, report, jobs=jobs, max_pixels=max_pixels, progress=progress)
        if prune and gone:
            _prune(catalogue, storage, gone, report)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


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


def _process(catalogue, storage, todo, known, report, *, jobs, max_pixels, progress) -> None:
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

    bar = tqdm(total=sum(f.byte_size for f in todo), unit="B", unit_scale=True, unit_divisor=1024,
               desc="sync", disable=progress is False or not todo, file=sys.stderr, smoothing=0.1)
    with ProcessPoolExecutor(max_workers=jobs, initializer=exit_with_parent) as decoders, \
            ThreadPoolExecutor(max_workers=max(4, jobs * 4)) as movers:
        futures: list[Future[list[Outcome]]] = [
            movers.submit(_handle_chunk, decoders, storage, todo[i : i + CHUNK], known, max_pixels)
            for i in range(0, len(todo), CHUNK)
        ]
        done = 0
        try:
            for outcome in (o for future in as_completed(futures) for o in future.result()):
                done += 1
                _count(outcome, report)
                if outcome.kind in ("touched", "metadata"):
                    pending_touches.append((outcome.file.key, outcome.file.byte_size,
                                            outcome.file.mtime_ns, outcome.metadata))
                elif outcome.record is not None:
                    pending_rows.append(outcome.record)
                report.bytes_read += outcome.file.byte_size
                bar.update(outcome.file.byte_size)
                bar.set_postfix_str(f"{done}/{len(todo)} files", refresh=False)
                if (len(pending_rows) + len(pending_touches) >= FLUSH_EVERY
                        or time.monotonic() - last_flush >= FLUSH_SECONDS):
                    flush()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            bar.close()  # first: a database gone away makes the flush below raise
            flush()  # whatever finished uploading is recorded, even when interrupted


def _handle_chunk(decoders: ProcessPoolExecutor, storage: Storage, files: list[LocalFile],
                  known: dict[str, KnownFile], max_pixels: int) -> list[Outcome]:
    """Inspect a few files on a decoder process, then upload each and say what its row should be."""
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
