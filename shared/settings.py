"""One typed settings object per process, built from the environment at the entry point.

Every setting is read and checked here, once: a bad value stops the program with one line
naming the variable and what it accepts. The rest of the code receives a `Settings`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit

from dotenv import load_dotenv

from .redact import mask_url

DEFAULT_REPLICATE_MODEL = (
    "krthr/clip-embeddings:1c0371070cb827ec3c7f2f28adcdde54b50dcd239aa6faea0bc98b174ef03fb4"
)
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
R2_REQUIRED = ("R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_BUCKET")
EMBEDDERS = ("auto", "replicate", "mlx", "none")
# How embeddings are stored and indexed (shared/store/layout.py; sizes in the README).
EMBEDDING_STORAGES = ("halfvec-index", "float32")
WATCH_EVENTS = ("auto", "off")
# pgvector's HNSW index takes vectors of at most 2,000 dimensions.
MAX_VECTOR_DIM = 2000


class SettingsError(Exception):
    """The configuration is incomplete or malformed; the message names what to fix."""


@dataclass(frozen=True)
class R2Settings:
    """Where objects go in Cloudflare R2 (or any S3-compatible server)."""

    account_id: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    bucket: str
    prefix: str = ""
    endpoint_url: str = ""

    @property
    def endpoint(self) -> str:
        """The S3 endpoint: R2's own unless R2_ENDPOINT_URL points elsewhere."""
        return self.endpoint_url or f"https://{self.account_id}.r2.cloudflarestorage.com"


@dataclass(frozen=True)
class WebSettings:
    """How the web pages and the JSON API behave (BROWSE_* variables)."""

    page_size: int = 24  # a first screen of thumbnails under 1.5 MB (docs/benchmarks.md)
    max_page_size: int = 200
    search_k: int = 60  # results of a text or image search on the pages
    similar_k: int = 24
    max_k: int = 200
    hnsw_ef_search: int = 300  # recall@10 0.96 at p50 6.3 ms at 1M rows (docs/benchmarks.md)
    # A filtered search scans every matching row when at most this many match, else it walks
    # the HNSW index (docs/benchmarks.md, "filtered search").
    exact_search_rows: int = 6_000
    # How far pgvector's iterative index scan may go for filtered rows before giving up (the
    # search then scans the matching rows exactly).
    hnsw_max_scan_tuples: int = 20_000
    embed_timeout_s: float = 20.0
    embed_workers: int = 4
    max_upload_bytes: int = 20 * 1024 * 1024
    # Pixels an upload may decode to (JPEG decodes at 1/8 size): a 48 MP phone photo passes,
    # and one decode stays under 200 MB (4 bytes a pixel at most).
    max_upload_pixels: int = 50_000_000
    upload_slots: int = 2  # image searches at once; the others wait a second, then get a 503
    db_pool_size: int = 8
    db_wait_s: float = 2.0  # a page waits this long for the database, then answers 503
    summary_ttl_s: float = 10.0  # the folders' counts are reused this long (they are counted)
    live_poll_s: float = 3.0  # how often an open page asks whether the library changed
    # scheme://host[:port] the JSON API's URLs start with; None: URLs relative to the server.
    public_url: str | None = None


# name, attribute, parser, lowest, highest: every BROWSE_* variable and what it accepts.
_WEB_FIELDS: tuple[tuple[str, str, type, float, float], ...] = (
    ("BROWSE_PAGE_SIZE", "page_size", int, 1, 200),
    ("BROWSE_MAX_PAGE_SIZE", "max_page_size", int, 1, 1000),
    ("BROWSE_SEARCH_K", "search_k", int, 1, 1000),
    ("BROWSE_SIMILAR_K", "similar_k", int, 1, 1000),
    ("BROWSE_MAX_K", "max_k", int, 1, 1000),
    ("BROWSE_HNSW_EF_SEARCH", "hnsw_ef_search", int, 1, 1000),
    ("BROWSE_EXACT_SEARCH_ROWS", "exact_search_rows", int, 0, 10_000_000),
    ("BROWSE_HNSW_MAX_SCAN_TUPLES", "hnsw_max_scan_tuples", int, 100, 10_000_000),
    ("BROWSE_EMBED_TIMEOUT_S", "embed_timeout_s", float, 0.1, 600),
    ("BROWSE_EMBED_WORKERS", "embed_workers", int, 1, 64),
    ("BROWSE_MAX_UPLOAD_BYTES", "max_upload_bytes", int, 1024, 1024**3),
    ("BROWSE_MAX_UPLOAD_PIXELS", "max_upload_pixels", int, 10_000, 500_000_000),
    ("BROWSE_UPLOAD_SLOTS", "upload_slots", int, 1, 64),
    ("BROWSE_DB_POOL_SIZE", "db_pool_size", int, 1, 100),
    ("BROWSE_DB_WAIT_S", "db_wait_s", float, 0.1, 60),
    ("BROWSE_SUMMARY_TTL_S", "summary_ttl_s", float, 0, 3600),
    ("BROWSE_LIVE_POLL_S", "live_poll_s", float, 0.2, 3600),
)


@dataclass(frozen=True)
class LiveSettings:
    """How `loader up` and `loader watch` follow the images folder and report (WATCH_*, PROGRESS_*)."""

    debounce_s: float = 0.3  # quiet time after the last file event before a sync pass
    settle_s: float = 1.0  # a file changed more recently than this is still being written
    events: str = "auto"  # auto: filesystem events where the system has them; off: polling only
    poll_s: float = 2.0  # how often the folder is rescanned when polling
    progress_every_s: float = 10.0  # a progress line this often when output is not a terminal


_LIVE_FIELDS: tuple[tuple[str, str, type, float, float], ...] = (
    ("WATCH_DEBOUNCE_S", "debounce_s", float, 0, 60),
    ("WATCH_SETTLE_S", "settle_s", float, 0, 3600),
    ("WATCH_POLL_S", "poll_s", float, 0.1, 3600),
    ("PROGRESS_EVERY_S", "progress_every_s", float, 0.1, 3600),
)


@dataclass(frozen=True)
class Settings:
    """Everything a process of Image Browser is configured with."""

    images_dir: Path
    data_dir: Path
    database_url: str | None = field(default=None, repr=False)
    # The variable the database URL came from, for messages (mlx-local calls it DB_URL).
    database_setting: str = "SUPABASE_DB_URL"
    r2: R2Settings | None = None
    image_base_url: str | None = None
    expected_vector_dim: int = 768
    replicate_api_token: str | None = field(default=None, repr=False)
    replicate_model: str = DEFAULT_REPLICATE_MODEL
    replicate_base_url: str | None = None
    replicate_max_per_minute: int = 600
    replicate_poll_interval: float = 0.5  # the replicate client reads it too: checked here first
    embedder: str = "auto"
    clip_model: str = DEFAULT_CLIP_MODEL
    clip_model_path: Path | None = None
    max_image_pixels: int = 178_956_970
    embedding_storage: str = "halfvec-index"
    # The most memory (MB) an HNSW index build may take in the database (maintenance_work_mem);
    # None: a quarter of this machine's memory for the embedded Postgres, else 1,024.
    index_build_memory_mb: int | None = None
    web: WebSettings = WebSettings()
    live: LiveSettings = LiveSettings()

    @property
    def embedded_database(self) -> bool:
        """True when no database URL is configured and the bundled Postgres is used."""
        return self.database_url is None

    @property
    def thumbnails_dir(self) -> Path:
        """Where thumbnails live when storage is local."""
        return self.data_dir / "thumbnails"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], database_setting: str = "SUPABASE_DB_URL"
    ) -> "Settings":
        """Build settings from environment variables, refusing bad values and half a configuration.

        `database_setting` names the variable holding the database URL.
        """
        get = _reader(env)
        return cls(
            images_dir=Path(get("IMAGES_DIR") or "images").expanduser().absolute(),
            data_dir=Path(get("DATA_DIR") or ".data").expanduser().absolute(),
            database_url=_database_url(get, database_setting),
            database_setting=database_setting,
            r2=_r2_from_env(get),
            image_base_url=_base_url(get("IMAGE_BASE_URL")),
            expected_vector_dim=_number(get, "EXPECTED_VECTOR_DIM", 768, int, 1, MAX_VECTOR_DIM),
            replicate_api_token=get("REPLICATE_API_TOKEN"),
            replicate_model=get("REPLICATE_MODEL") or DEFAULT_REPLICATE_MODEL,
            replicate_base_url=_http_url(get, "REPLICATE_BASE_URL"),
            replicate_max_per_minute=_number(
                get, "REPLICATE_MAX_PER_MINUTE", 600, int, 1, 1_000_000
            ),
            replicate_poll_interval=_number(get, "REPLICATE_POLL_INTERVAL", 0.5, float, 0.01, 60),
            embedder=_choice(get, "EMBEDDER", EMBEDDERS, "auto"),
            clip_model=get("CLIP_MODEL") or DEFAULT_CLIP_MODEL,
            clip_model_path=Path(p).expanduser() if (p := get("CLIP_MODEL_PATH")) else None,
            max_image_pixels=_number(get, "MAX_IMAGE_PIXELS", 178_956_970, int, 1, 2**40),
            embedding_storage=_choice(get, "EMBEDDING_STORAGE", EMBEDDING_STORAGES,
                                      "halfvec-index"),
            index_build_memory_mb=_number(get, "INDEX_BUILD_MEMORY_MB", None, int, 64,
                                          1024 * 1024),
            web=WebSettings(
                **{attr: _number(get, name, getattr(WebSettings, attr), kind, lo, hi)
                   for name, attr, kind, lo, hi in _WEB_FIELDS},
                public_url=_public_url(get("BROWSE_PUBLIC_URL")),
            ),
            live=LiveSettings(
                events=_choice(get, "WATCH_EVENTS", WATCH_EVENTS, "auto"),
                **{attr: _number(get, name, getattr(LiveSettings, attr), kind, lo, hi)
                   for name, attr, kind, lo, hi in _LIVE_FIELDS},
            ),
        )._checked()

    def _checked(self) -> "Settings":
        if self.r2 and not self.image_base_url:
            raise SettingsError(
                "R2 storage is configured but IMAGE_BASE_URL is not: set it to the bucket's "
                "public URL (the same value in loader/.env and browse/.env)"
            )
        web = self.web
        for name, value, limit_name, limit in (
            ("BROWSE_PAGE_SIZE", web.page_size, "BROWSE_MAX_PAGE_SIZE", web.max_page_size),
            ("BROWSE_SEARCH_K", web.search_k, "BROWSE_MAX_K", web.max_k),
            ("BROWSE_SIMILAR_K", web.similar_k, "BROWSE_MAX_K", web.max_k),
        ):
            if value > limit:
                raise SettingsError(f"{name} must be at most {limit_name} ({limit}), got {value}")
        return self


def load_settings(app_dir: Path, database_setting: str = "SUPABASE_DB_URL",
                  also: tuple[Path, ...] = ()) -> Settings:
    """Load `app_dir/.env`, then each of `also`'s .env (the environment wins, then the first
    file that sets a variable) and build the settings."""
    for folder in (app_dir, *also):
        load_dotenv(folder / ".env", override=False)
    return Settings.from_env(os.environ, database_setting=database_setting)


def _reader(env: Mapping[str, str]) -> Callable[[str], str | None]:
    def get(name: str) -> str | None:
        return (env.get(name) or "").strip() or None

    return get


def _r2_from_env(get) -> R2Settings | None:
    present = [name for name in R2_REQUIRED if get(name)]
    if not present:
        return None
    missing = [name for name in R2_REQUIRED if not get(name)]
    if missing:
        raise SettingsError(
            f"R2 storage is half configured: {', '.join(present)} set but "
            f"{', '.join(missing)} missing"
        )
    prefix = (get("R2_PREFIX") or "").strip("/")
    return R2Settings(
        account_id=get("R2_ACCOUNT_ID"),
        access_key_id=get("R2_ACCESS_KEY_ID"),
        secret_access_key=get("R2_SECRET_ACCESS_KEY"),
        bucket=get("R2_BUCKET"),
        prefix=f"{prefix}/" if prefix else "",
        endpoint_url=_http_url(get, "R2_ENDPOINT_URL") or "",
    )


def _base_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise SettingsError(
            f"IMAGE_BASE_URL must start with http:// or https://, got {mask_url(value)[:80]!r}")
    return value.rstrip("/") + "/"


def _public_url(value: str | None) -> str | None:
    """An http(s) origin (scheme://host[:port]) without a trailing slash, or None."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.netloc
            or parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc):
        raise SettingsError(
            f"BROWSE_PUBLIC_URL must be the site's address, like https://photos.example.com, "
            f"got {mask_url(value)[:80]!r}")
    return value.rstrip("/")


def _http_url(get, name: str) -> str | None:
    value = get(name)
    if value is not None and not re.match(r"https?://[^/\s]", value):
        raise SettingsError(f"{name} must be an http:// or https:// URL, got {mask_url(value)[:80]!r}")
    return value


def _database_url(get, name: str) -> str | None:
    """A postgresql:// URL or libpq's key=value string; anything else is refused unshown,
    since a value pasted into the wrong place may be the password itself."""
    value = get(name)
    if value is None:
        return None
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]{0,19})://", value)
    if scheme and scheme.group(1).lower() in ("postgres", "postgresql"):
        return value
    if scheme:
        raise SettingsError(
            f"{name} must be a postgresql:// URL, got a {scheme.group(1)}:// URL")
    if "=" not in value:
        raise SettingsError(
            f"{name} must be a postgresql:// URL (or libpq's key=value string); its value is "
            "neither (not shown, in case it is a password)")
    return value


def _number(get, name: str, default, kind: type, lowest: float, highest: float):
    """A whole or decimal number within [lowest, highest]; one line naming the variable otherwise."""
    raw = get(name)
    if raw is None:
        return default
    what = "a whole number" if kind is int else "a number"
    allowed = f"{what} from {_shown(lowest, kind)} to {_shown(highest, kind)}"
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {allowed}, got {raw[:40]!r}") from None
    if not lowest <= value <= highest:  # NaN fails this too
        raise SettingsError(f"{name} must be {allowed}, got {raw[:40]!r}")
    return value


def _shown(bound: float, kind: type) -> str:
    return f"{int(bound):,}" if kind is int else f"{bound:g}"


def _choice(get, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = (get(name) or default).lower()
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value
