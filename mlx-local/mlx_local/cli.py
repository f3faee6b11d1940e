"""`mlx-local`: serve the library with search by CLIP running in MLX on this machine."""

from __future__ import annotations

import click

from shared.embedders.base import EmbeddingError
from shared.settings import SettingsError
from shared.store import DatabaseError, SchemaError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5001, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Requests served at once.")
def main(host: str, port: int, threads: int) -> None:
    """Serve the image library, embedding search queries with CLIP in MLX locally.

    Configuration comes from mlx-local/.env and the environment: DB_URL, IMAGE_BASE_URL,
    EXPECTED_VECTOR_DIM, CLIP_MODEL (a Hugging Face repo) or CLIP_MODEL_PATH (a local folder).
    """
    from browse.cli import configure_logging, serve_app

    from . import create_app

    configure_logging()
    click.echo("loading CLIP's text tower...")
    try:
        app = create_app()
    except (SettingsError, DatabaseError, SchemaError, EmbeddingError) as exc:
        raise click.ClickException(str(exc)) from None
    serve_app(app, host, port, threads, "image-browser-mlx-local")


if __name__ == "__main__":
    main()
