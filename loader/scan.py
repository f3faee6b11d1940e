"""Find the images under a folder: relative POSIX keys, sizes and mtimes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from shared.imagefile import is_image_name


class LocalFile(NamedTuple):
    """One candidate image on disk (a named tuple: a walk makes one per file, fast)."""

    key: str
    location: str  # its path; a Path is made only for the few files read (`path`)
    byte_size: int
    mtime_ns: int
    changed_ns: int = 0  # the last write, rename or touch (mtime or ctime): when it may be complete

    @property
    def path(self) -> Path:
        """The file's path."""
        return Path(self.location)


@dataclass
class ScanResult:
    """Everything a walk of the images folder found."""

    files: list[LocalFile] = field(default_factory=list)
    skipped: int = 0  # hidden files, non-images, links leading out
    problems: list[tuple[str, str]] = field(default_factory=list)


def scan_images(root: Path) -> ScanResult:
    """Walk `root` recursively; skip hidden entries, non-images and links that leave it."""
    root = root.absolute()
    real_root = root.resolve()
    result = ScanResult()
    _walk(root, "", real_root, result)
    result.files.sort(key=lambda f: f.key)
    return result


def _walk(folder: Path, prefix: str, real_root: Path, result: ScanResult) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        result.problems.append((prefix or ".", f"cannot list folder: {exc.strerror}"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            result.skipped += 1
            continue
        key = prefix + entry.name
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            result.problems.append((key.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                                    "file name is not valid UTF-8"))
            continue
        try:
            if entry.is_symlink():
                if entry.is_dir() or not _links_inside(entry.path, real_root):
                    result.skipped += 1  # never follow a folder link, nor any link leading out
                    continue
            if entry.is_dir(follow_symlinks=False):
                _walk(Path(entry.path), key + "/", real_root, result)
                continue
            if not entry.is_file() or not is_image_name(entry.name):
                result.skipped += 1
                continue
            stat = entry.stat()
        except OSError as exc:
            result.problems.append((key, f"cannot read file: {exc.strerror}"))
            continue
        result.files.append(LocalFile(key, entry.path, stat.st_size, stat.st_mtime_ns,
                                      max(stat.st_mtime_ns, stat.st_ctime_ns)))


def _links_inside(path: str, real_root: Path) -> bool:
    target = Path(path).resolve()
    return target.is_relative_to(real_root) and target.is_file()
