"""`loader up` and `loader watch`: the library kept live, with or without the web pages.

`up` creates the schema, starts the web server at once (it answers within seconds, before any
model is here), and runs the live library beside it (`loader.live`): the folder synced and
watched, the model fetched in the background, what is missing embedded, newest first. Search
turns on as soon as the model is loaded. `watch` is the same without the pages, for a
deployment whose web app runs elsewhere.

Ctrl-C or SIGTERM stops everything started here (the server, the threads, the embedded
Postgres when this was its last user) and exits 0; a second signal stops at once.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import click

from shared.database import database_url, describe
from shared.lifecycle import StopSignals
from shared.progress import Board, say
from shared.settings import Settings
from shared.store import Catalogue, Schema, SchemaReport, connect

from .live import LiveLibrary
from .model import ModelOutcome


@dataclass(frozen=True)
class ServeOptions:
    """Where `up` serves the pages."""

    host: str = "127.0.0.1"
    port: int = 5000
    threads: int = 8


def run_up(settings: Settings, serve: ServeOptions, jobs: int) -> None:
    """Serve the pages and keep the library live until Ctrl-C or SIGTERM."""
    from browse import create_app
    from browse.server import WebServer

    signals = StopSignals(interrupt=True)
    started = False
    with signals, ExitStack() as cleanup:
        try:
            url, schema = _open_library(settings)
            board = Board()
            app = create_app(settings, embedder=None, board=board)
            search = app.extensions["image_browser"].search
            search.set_off("the search model is getting ready (see the progress below)",
                           "the search model is getting ready")
            try:
                server = WebServer(app, serve.host, serve.port, serve.threads, "image-browser")
            except OSError as exc:
                app.extensions["image_browser"].close()
                raise click.ClickException(
                    f"cannot listen on {serve.host}:{serve.port}: {exc.strerror or exc}") from None
            cleanup.callback(server.close)

            def on_model(outcome: ModelOutcome) -> None:
                if outcome.embedder is not None:
                    search.turn_on(outcome.embedder)
                else:
                    search.set_off(outcome.reason, outcome.summary)

            def on_percent(percent: int) -> None:
                search.set_off(f"the search model is downloading ({percent}%); search starts "
                               "when it is here", f"the search model is downloading ({percent}%)")

            live = LiveLibrary(settings, url, signals.event, board,
                               table_dimensions=schema.dimensions, jobs=jobs,
                               on_model=on_model, on_percent=on_percent)
            click.echo(f"Image Browser on {server.url}  (Ctrl-C stops)")
            live.start()
            started = True
            cleanup.callback(_stop_live, live)
            server.run()  # until Ctrl-C or SIGTERM
        except KeyboardInterrupt:
            pass  # a signal during start-up: what started is stopped below
        finally:
            signals.request()
            if started:
                say("stopping: finishing the photos in hand, giving the rest back")
    say("stopped")


def run_watch(settings: Settings, jobs: int) -> None:
    """Keep the library live without serving pages, until Ctrl-C or SIGTERM."""
    with StopSignals() as signals, ExitStack() as cleanup:
        try:
            url, schema = _open_library(settings)
            live = LiveLibrary(settings, url, signals.event, Board(),
                               table_dimensions=schema.dimensions, jobs=jobs)
            live.start()
            cleanup.callback(_stop_live, live)
            while not signals.event.wait(0.5):
                pass
            say("stopping: finishing the photos in hand, giving the rest back")
        except KeyboardInterrupt:
            pass  # a second signal: stop now
        finally:
            signals.request()
    say("stopped")


def _open_library(settings: Settings) -> tuple[str, SchemaReport]:
    """Start (or reach) the database, create or upgrade the table, and say where things are."""
    from shared.store import DatabaseError, SchemaError

    try:
        url = database_url(settings)
        with connect(url, settings.database_setting) as conn:
            schema = Schema(conn).ensure(settings.expected_vector_dim, settings.embedding_storage,
                                         build_index=False)
            counts = Catalogue(conn).counts()
    except (DatabaseError, SchemaError) as exc:
        raise click.ClickException(str(exc)) from None
    say(f"library: {counts.images:,} photos, {counts.embedded:,} searchable; database: "
        f"{describe(settings)}; photos from {settings.images_dir}")
    return url, schema


def _stop_live(live: LiveLibrary) -> None:
    live.join()
