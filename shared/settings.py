"""One typed settings object per process, built from the environment at the entry point."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from dotenv import load_dotenv

DEFAULT_REPLICATE_MODEL = (
    "krthr/clip-embeddings:1c0371070cb827ec3c7f2f28adcdde54b50dcd239aa6faea0bc98b174ef03fb4"
)
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
R2_REQUIRED = ("R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_BUCKET")


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
class Settings:
    """Everything a process of Image Browser is configured with."""

    images_dir: Path
    data_dir: Path
    database_url: str | None = field(default=None, repr=False)
    r2: R2Settings | None = None
    image_base_url: str | None = None
    expected_vector_dim: int = 768
    replicate_api_token: str | None = field(default=None, repr=False)
    replicate_model: str = DEFAULT_REPLICATE_MODEL
    replicate_base_url: str | None = None
    replicate_max_per_minute: int = 600
    embedder: str = "auto"
    clip_model: str = DEFAULT_CLIP_MODEL
    clip_model_path: Path | None = None
    max_image_pixels: int = 178_956_970

    @property
    def embedded_database(self) -> bool:
        """True when no database URL is configured and the bundled Postgres is used."""
        return self.database_url is None

    @property
    def thumbnails_dir(self) -> Path:
        """Where thumbnails live when storage is local."""
        return self.data_dir / "thumbnails"

    @classmethod
    def from_env(cls, env: Mapping[str, str], db_url_var: str = "SUPABASE_DB_URL") -> "Settings":
        """Build settings from environment variables, refusing half a configuration."""
        get = lambda name: (env.get(name) or "").strip() or None  # noqa: E731
        return cls(
            images_dir=Path(get("IMAGES_DIR") or "images").expanduser().absolute(),
            data_dir=Path(get("DATA_DIR") or ".data").expanduser().absolute(),
            database_url=get(db_url_var) or (get("SUPABASE_DB_URL") if db_url_var != "SUPABASE_DB_URL" else None),
            r2=_r2_from_env(get),
            image_base_url=_base_url(get("IMAGE_BASE_URL")),
            expected_vector_dim=_positive_int(get, "EXPECTED_VECTOR_DIM", 768),
            replicate_api_token=get("REPLICATE_API_TOKEN"),
            replicate_model=get("REPLICATE_MODEL") or DEFAULT_REPLICATE_MODEL,
            replicate_base_url=get("REPLICATE_BASE_URL"),
            replicate_max_per_minute=_positive_int(get, "REPLICATE_MAX_PER_MINUTE", 600),
            embedder=_choice(get, "EMBEDDER", ("auto", "replicate", "mlx", "none"), "auto"),
            clip_model=get("CLIP_MODEL") or DEFAULT_CLIP_MODEL,
            clip_model_path=Path(p).expanduser() if (p := get("CLIP_MODEL_PATH")) else None,
            max_image_pixels=_positive_int(get, "MAX_IMAGE_PIXELS", 178_956_970),
        )._checked()

    def _checked(self) -> "Settings":
        if self.r2 and not self.image_base_url:
            raise SettingsError(
                "R2 storage is configured but IMAGE_BASE_URL is not: set it to the bucket's "
                "public URL (the same value in loader/.env and browse/.env)"
            )
        return self


def load_settings(app_dir: Path, db_url_var: str = "SUPABASE_DB_URL") -> Settings:
    """Load `app_dir/.env` (the environment wins) and build the settings."""
    load_dotenv(app_dir / ".env", override=False)
    return Settings.from_env(os.environ, db_url_var=db_url_var)


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
        endpoint_url=get("R2_ENDPOINT_URL") or "",
    )


def _base_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise SettingsError(f"IMAGE_BASE_URL must start with http:// or https://, got {value!r}")
    return value.rstrip("/") + "/"


def _positive_int(get, name: str, default: int) -> int:
    raw = get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {value}")
    return value


def _choice(get, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = (get(name) or default).lower()
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value
