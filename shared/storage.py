"""Object storage behind one interface: Cloudflare R2 (S3 API) or the local disk."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from .redact import mask_url
from .settings import R2Settings, Settings

THUMBNAIL_FOLDER = ".thumbnails"
THUMBNAIL_TYPE = "image/jpeg"


class StorageError(Exception):
    """An object could not be stored, read or deleted; the message names it."""


class Storage(Protocol):
    """Where originals and thumbnails live, and how a browser reaches them."""

    kind: str

    def describe(self) -> str:
        """Say where objects go, without secrets."""
        ...

    def check_writable(self) -> None:
        """Raise StorageError, naming the place and the reason, if nothing could be stored."""
        ...

    def folder_problem(self, folder: Path) -> str | None:
        """Why originals found in `folder` could not be stored here for every app, or None."""
        ...

    def put_original(self, key: str, path: Path, content_type: str) -> None:
        """Store the file at `path` as the original named `key`."""
        ...

    def put_thumbnail(self, key: str, data: bytes) -> None:
        """Store thumbnail bytes under a thumbnail key."""
        ...

    def read_original(self, key: str) -> bytes:
        """The bytes of an original."""
        ...

    def delete_original(self, key: str) -> None:
        """Remove an original (missing is fine)."""
        ...

    def delete_thumbnail(self, key: str) -> None:
        """Remove a thumbnail (missing is fine)."""
        ...

    def original_url(self, key: str) -> str | None:
        """The public URL of an original, or None when the app must serve it."""
        ...

    def thumbnail_url(self, key: str) -> str | None:
        """The public URL of a thumbnail, or None when the app must serve it."""
        ...


def thumbnail_key(sha256: str) -> str:
    """Thumbnails are content-addressed: the same picture under two names shares one."""
    return f"{sha256[:2]}/{sha256}.jpg"


_THUMBNAIL_KEY = re.compile(r"([0-9a-f]{2})/(\1[0-9a-f]{62})\.jpg")


def thumbnail_sha256(key: str) -> str | None:
    """The content hash a thumbnail key names, or None when `key` is not one `thumbnail_key` makes."""
    match = _THUMBNAIL_KEY.fullmatch(key)
    return match.group(2) if match else None


def open_storage(settings: Settings) -> Storage:
    """The storage the settings ask for."""
    if settings.r2:
        return R2Storage(settings.r2, settings.image_base_url or "")
    return LocalStorage(settings.images_dir, settings.thumbnails_dir)


class LocalStorage:
    """Originals stay where they are in the images folder; thumbnails go under DATA_DIR."""

    kind = "local"

    def __init__(self, images_dir: Path, thumbnails_dir: Path) -> None:
        self.images_dir = images_dir
        self.thumbnails_dir = thumbnails_dir

    def describe(self) -> str:
        """Say where objects go."""
        return f"local disk ({self.images_dir}, thumbnails in {self.thumbnails_dir})"

    def check_writable(self) -> None:
        """Create the thumbnails folder and write a file in it, or say which folder and why not."""
        folder = self.thumbnails_dir
        probe = folder / f".write-check.{os.getpid()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StorageError(
                f"cannot write thumbnails in {folder} (the folder comes from DATA_DIR): "
                f"{_why(exc, folder)}") from None

    def folder_problem(self, folder: Path) -> str | None:
        """Originals are read in place, from IMAGES_DIR, by every app: another folder is refused."""
        if os.path.realpath(folder) == os.path.realpath(self.images_dir):
            return None
        return (
            f"cannot sync {folder}: with local storage every app (embed, browse) reads the "
            f"originals from IMAGES_DIR, which is {self.images_dir}. Set IMAGES_DIR={folder} "
            "for every app (loader/.env, browse/.env, mlx-local/.env) instead, or store the "
            "originals in R2"
        )

    def put_original(self, key: str, path: Path, content_type: str) -> None:
        """Copy in only when the file is not already the original in the images folder."""
        target = self.original_path(key)
        if os.path.realpath(path) != os.path.realpath(target):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            except OSError as exc:
                raise StorageError(f"cannot copy the original into {target.parent}: "
                                   f"{_why(exc, target.parent)}") from None

    def put_thumbnail(self, key: str, data: bytes) -> None:
        """Write atomically, so a killed run never leaves half a thumbnail."""
        target = self.thumbnail_path(key)
        # One partial file per thread: two copies of one picture share a thumbnail key, and
        # sync's threads may write it at the same moment.
        partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            os.replace(partial, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise StorageError(f"cannot write its thumbnail in {target.parent}: "
                               f"{_why(exc, target.parent)}") from None

    def read_original(self, key: str) -> bytes:
        """The bytes of an original."""
        try:
            return self.original_path(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror}") from exc

    def delete_original(self, key: str) -> None:
        """Originals in the user's folder are never deleted by us."""

    def delete_thumbnail(self, key: str) -> None:
        """Remove a thumbnail (missing is fine)."""
        path = self.thumbnail_path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete the thumbnail {path}: {_why(exc, path.parent)}") from None

    def original_url(self, key: str) -> str | None:
        """Local originals are served by the web app."""
        return None

    def thumbnail_url(self, key: str) -> str | None:
        """Local thumbnails are served by the web app."""
        return None

    def original_path(self, key: str) -> Path:
        """The file of an original; refuses keys that would leave the images folder."""
        return _inside(self.images_dir, key)

    def thumbnail_path(self, key: str) -> Path:
        """The file of a thumbnail; refuses keys that would leave the thumbnails folder."""
        return _inside(self.thumbnails_dir, key)


def _why(exc: OSError, folder: Path) -> str:
    """The reason in words, naming the file that stands where a folder should be."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        for place in (folder, *folder.parents):
            if place.exists() or place.is_symlink():
                if not place.is_dir():
                    return f"{place} is a file, not a folder"
                break
    return exc.strerror or type(exc).__name__


# A backslash is a plain character in POSIX file names, and a separator only on Windows.
_SEPARATORS = {sep for sep in (os.sep, os.altsep) if sep and sep != "/"}


def _inside(root: Path, key: str) -> Path:
    """root/key, for a key of '/'-separated names that cannot lead anywhere else."""
    root = root.absolute()
    if not key or "\x00" in key or key.startswith("/") or any(s in key for s in _SEPARATORS):
        raise StorageError(f"invalid object key {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"invalid object key {key!r}")
    return root.joinpath(*parts)


class R2Storage:
    """Cloudflare R2 (or any S3-compatible server) through boto3."""

    kind = "r2"

    def __init__(self, r2: R2Settings, public_base_url: str) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.r2 = r2
        self.public_base_url = public_base_url.rstrip("/") + "/"
        self.client = boto3.client(
            "s3",
            endpoint_url=r2.endpoint,
            aws_access_key_id=r2.access_key_id,
            aws_secret_access_key=r2.secret_access_key,
            region_name="auto",
            config=Config(
                retries={"max_attempts": 6, "mode": "standard"},  # 5xx, throttling, timeouts
                connect_timeout=10,
                read_timeout=60,
                max_pool_connections=32,
            ),
        )
        self.transfer = TransferConfig(multipart_threshold=32 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024)

    def describe(self) -> str:
        """Say where objects go, without secrets."""
        return f"R2 bucket {self.r2.bucket!r} prefix {self.r2.prefix!r} at {mask_url(self.r2.endpoint)}"

    def check_writable(self) -> None:
        """Nothing to check before the first upload: each failed upload names its file."""

    def folder_problem(self, folder: Path) -> str | None:
        """Originals are uploaded, so any folder can be synced."""
        return None

    def object_key(self, key: str) -> str:
        """The bucket key of an original."""
        return self.r2.prefix + key

    def thumbnail_object_key(self, key: str) -> str:
        """The bucket key of a thumbnail, beside the originals under the prefix."""
        return f"{self.r2.prefix}{THUMBNAIL_FOLDER}/{key}"

    def put_original(self, key: str, path: Path, content_type: str) -> None:
        """Upload a file (multipart when large)."""
        try:
            self.client.upload_file(
                str(path), self.r2.bucket, self.object_key(key),
                ExtraArgs={"ContentType": content_type}, Config=self.transfer,
            )
        except Exception as exc:
            raise StorageError(f"upload of {key} to R2 failed: {exc}") from exc

    def put_thumbnail(self, key: str, data: bytes) -> None:
        """Upload thumbnail bytes, cacheable forever since the key is the content hash."""
        try:
            self.client.put_object(
                Bucket=self.r2.bucket, Key=self.thumbnail_object_key(key), Body=data,
                ContentType=THUMBNAIL_TYPE, CacheControl="public, max-age=31536000, immutable",
            )
        except Exception as exc:
            raise StorageError(f"upload of thumbnail {key} to R2 failed: {exc}") from exc

    def read_original(self, key: str) -> bytes:
        """Download an original."""
        try:
            return self.client.get_object(Bucket=self.r2.bucket, Key=self.object_key(key))["Body"].read()
        except Exception as exc:
            raise StorageError(f"download of {key} from R2 failed: {exc}") from exc

    def delete_original(self, key: str) -> None:
        """Remove an original."""
        try:
            self.client.delete_object(Bucket=self.r2.bucket, Key=self.object_key(key))
        except Exception as exc:
            raise StorageError(f"deleting {key} from R2 failed: {exc}") from exc

    def delete_thumbnail(self, key: str) -> None:
        """Remove a thumbnail."""
        try:
            self.client.delete_object(Bucket=self.r2.bucket, Key=self.thumbnail_object_key(key))
        except Exception as exc:
            raise StorageError(f"deleting thumbnail {key} from R2 failed: {exc}") from exc

    def original_url(self, key: str) -> str | None:
        """IMAGE_BASE_URL + prefix + the URL-quoted key."""
        return self.public_base_url + quote(self.object_key(key), safe="/")

    def thumbnail_url(self, key: str) -> str | None:
        """The public URL of a thumbnail."""
        return self.public_base_url + quote(self.thumbnail_object_key(key), safe="/")
