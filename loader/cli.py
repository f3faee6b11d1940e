"""The `loader` command: keep the image library's database and storage up to date."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from datetime import datetime
from pathlib import Path

import click
import psycopg

from shared.database import database_url, describe
from shared.embedders.base import EmbeddingError
from shared.embedders.factory import BACKENDS
from shared.lifecycle import StopSignals
from shared.progress import Progress
from shared.settings import Settings, SettingsError, load_settings
from shared.storage import StorageError, open_storage
from shared.store import (Catalogue, DatabaseError, Schema, SchemaError, SchemaReport, VectorIndex,
                          connect, connection_lost)

APP_DIR = Path(__file__).resolve().parent
BROWSE_DIR = APP_DIR.parent / "browse"  # `up` serves the pages too, so it reads browse/.env


class Context:
    """Settings read once at start-up; the database is opened only by commands that need it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: psycopg.Connection | None = None
        self._url = ""

    @property
    def conn(self) -> psycopg.Connection:
        """The database connection, opened (and the embedded server started) on first use."""
        if self._conn is None:
            try:
                where = (f"the embedded Postgres in {self.settings.data_dir / 'postgres'}"
                         if self.settings.embedded_database else self.settings.database_setting)
                self._url = database_url(self.settings)
                self._conn = connect(self._url, where)
            except DatabaseError as exc:
                raise click.ClickException(str(exc)) from None
        return self._conn

    @property
    def url(self) -> str:
        """The database URL (the embedded server started first, when it is the one used)."""
        self.conn  # noqa: B018 - opens it
        return self._url

    def ensure_schema(self, note_pending: bool = True) -> SchemaReport:
        """Create or upgrade the table (all but a long index build, which `ensure-schema` and
        `up` do); a conflict is a one-line error."""
        try:
            report = Schema(self.conn).ensure(self.settings.expected_vector_dim,
                                              self.settings.embedding_storage, build_index=False)
        except SchemaError as exc:
            raise click.ClickException(str(exc)) from None
        if note_pending and report.pending:
            click.echo(f"note: {report.pending}", err=True)
        return report


pass_context = click.make_pass_decorator(Context)


class LoaderGroup(click.Group):
    """The commands; a database that goes away in the middle of one is one line, not a traceback."""

    def invoke(self, ctx: click.Context):
        """Run the command, turning a lost database connection into a ClickException."""
        try:
            return super().invoke(ctx)
        except psycopg.OperationalError as exc:
            url = ctx.obj.settings.database_url if isinstance(ctx.obj, Context) else None
            raise click.ClickException(connection_lost(exc, url)) from None


@click.group(cls=LoaderGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Load a folder of images into Image Browser's database and storage.

    Configuration comes from loader/.env and the environment (the environment wins).
    With nothing configured, an embedded Postgres and the local disk are used.
    """
    also = (BROWSE_DIR,) if ctx.invoked_subcommand == "up" else ()
    try:
        ctx.obj = Context(load_settings(APP_DIR, also=also))
    except SettingsError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


@main.command("ensure-schema")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_context
def ensure_schema(app: Context, as_json: bool) -> None:
    """Create or upgrade the image_embeddings table (safe to run any time).

    Also builds the vector index EMBEDDING_STORAGE asks for: the new index is built while search
    keeps using the old one, which is dropped after. Ctrl-C or SIGTERM stops it (exit 0);
    running it again finishes the work.
    """
    from .index import migrate_index

    with StopSignals() as signals:  # from the start: a stop between the steps is one too
        created = app.ensure_schema(note_pending=False).created
        outcome = migrate_index(app.settings, app.url, signals.event, show=not as_json,
                                tell=_tell(as_json))
        report = dataclasses.replace(app.ensure_schema(note_pending=False), created=created)
    if as_json:
        click.echo(json.dumps({**dataclasses.asdict(report), "migration": outcome}))
    else:
        verb = "created" if report.created else "up to date"
        click.echo(f"image_embeddings {verb}: {report.layout}, pgvector {report.pgvector_version}")
    if outcome == "stopped":
        click.echo("stopped before the end: run `loader ensure-schema` again to finish "
                   "(search uses the index it had meanwhile)", err=True)


def _tell(as_json: bool):
    """Where a migration's steps are said: stderr, quiet for --json."""
    return (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))


@main.command()
@click.option("--images", "images", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to scan (default: IMAGES_DIR, else ./images). With local storage "
                   "it must be IMAGES_DIR, where every app reads originals.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=lambda: os.cpu_count() or 2,
              show_default="number of CPUs", help="Files decoded at once.")
@click.option("--dry-run", is_flag=True, help="Only say what would change.")
@click.option("--prune", is_flag=True, help="Remove rows and objects whose files are gone.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def sync(app: Context, images: Path | None, jobs: int, dry_run: bool, prune: bool, as_json: bool) -> None:
    """Scan the images folder, upload new or changed files, and record them.

    Exits with status 1 when any file could not be read; the others are still recorded.
    """
    from .sync import run_sync

    settings = app.settings
    folder = images.absolute() if images is not None else settings.images_dir
    if not folder.is_dir():
        raise click.ClickException(f"images folder {folder} does not exist")
    storage = open_storage(settings)
    try:
        problem = storage.folder_problem(folder)
        if problem:
            raise StorageError(problem)
        if not dry_run:
            storage.check_writable()  # before any work: one line, not a failure per file
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    app.ensure_schema()
    with StopSignals() as signals:
        report = run_sync(
            Catalogue(app.conn), storage, folder,
            jobs=jobs, max_pixels=settings.max_image_pixels, dry_run=dry_run, prune=prune,
            progress=Progress("sync", "{done} of {total} files looked at", show=not as_json,
                              every_s=settings.live.progress_every_s),
            stop=signals.event,
        )
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        _print_sync_summary(report)
    if report.stopped:
        click.echo("stopped before the end: the next sync continues where this one stopped",
                   err=True)
    elif report.failed:
        sys.exit(1)


def _print_sync_summary(report) -> None:
    mb = report.bytes_read / 1e6
    what = "would add" if report.dry_run else "added"
    click.echo(
        f"{what} {report.new}, {'would update' if report.dry_run else 'updated'} {report.changed}, "
        f"unchanged {report.unchanged}, failed {len(report.failed)}"
        + (f", thumbnails made {report.thumbnails}" if report.thumbnails else "")
        + (f", dates and cameras read {report.metadata}" if report.metadata else "")
        + (f", pruned {report.pruned}" if report.pruned else "")
        + (f", hidden {report.hidden} (gone from the folder; --prune forgets them)"
           if report.hidden else "")
        + (f", back {report.restored}" if report.restored else "")
        + (f" ({mb:.1f} MB read in {report.seconds:.1f} s)" if report.bytes_read else "")
    )
    for failure in report.failed:
        click.echo(f"  failed: {failure['file']}: {failure['error']}", err=True)


@main.command()
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default=None,
              show_default="the EMBEDDER setting, else auto",
              help="replicate: Replicate's hosted CLIP; mlx: CLIP in MLX on this machine; "
                   "auto: Replicate when REPLICATE_API_TOKEN is set, else MLX with local weights.")
@click.option("--reembed", is_flag=True, help="Also redo rows embedded by another model.")
@click.option("--retry-failed", is_flag=True, help="Also retry rows whose embedding failed before.")
@click.option("--limit", type=click.IntRange(min=1), help="Embed at most this many distinct images.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64),
              help="Batches in flight at once (default: the backend's, 8 for Replicate, 2 for MLX).")
@click.option("--lease", "lease_seconds", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Seconds a claimed row stays reserved for this worker without renewal.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def embed(app: Context, backend: str | None, reembed: bool, retry_failed: bool, limit: int | None,
          jobs: int | None, lease_seconds: float, as_json: bool) -> None:
    """Compute the embeddings that are missing, a few at a time.

    Any number of workers, on any number of machines, can run at once: each image is
    embedded once, and a killed worker's images are taken up again after its lease.
    Exits with status 1 when any image failed or the run had to stop.
    """
    from shared.embedders.base import width_problem
    from shared.embedders.factory import make_embedder

    from .embed import EmbedOptions, run_embed

    try:
        embedder = make_embedder(app.settings, backend=backend,
                                 on_progress=_download_progress(app.settings, as_json))
    except EmbeddingError as exc:
        raise click.ClickException(f"no embedder available: {exc}") from None
    schema = app.ensure_schema()
    problem = width_problem(embedder, app.settings.expected_vector_dim, schema.dimensions)
    if problem:
        raise click.ClickException(problem)
    options = EmbedOptions(jobs=jobs or embedder.concurrency, limit=limit, reembed=reembed,
                           retry_failed=retry_failed, lease_seconds=lease_seconds)
    from .embed import searchable_progress

    progress = searchable_progress(app.conn, show=not as_json,
                                   every_s=app.settings.live.progress_every_s)
    with StopSignals() as signals:
        try:
            report = run_embed(app.conn, embedder, open_storage(app.settings), options,
                               progress=progress, stop=signals.event)
        finally:
            progress.finish("stopped" if signals.stopping else "done")
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        _print_embed_summary(report)
    if report.stopped and not report.error:
        click.echo("stopped before the end: the images in hand were saved, the others given "
                   "back for the next run", err=True)
    elif report.failed or report.error:
        sys.exit(1)


def _download_progress(settings: Settings, as_json: bool):
    """A callback that shows a model download's size first, then its progress."""
    from shared.progress import amount, say

    shown: list[Progress] = []

    def on_progress(p) -> None:
        if not shown:
            if not as_json:
                say(f"fetching {settings.clip_model} ({amount(p.total_bytes, 'B')}) from the "
                    "Hugging Face hub, once (resumable)")
            shown.append(Progress("model", "{done} of {total} downloaded", total=p.total_bytes,
                                  done=p.done_bytes, unit="B", show=not as_json,
                                  every_s=settings.live.progress_every_s))
        shown[0].set_done(p.done_bytes)
        if p.done_bytes >= p.total_bytes:
            shown[0].finish()

    return on_progress


def _print_embed_summary(report) -> None:
    click.echo(
        f"embedded {report.embedded} with {report.model}, shared with identical images {report.shared}, "
        f"failed {len(report.failed)} ({report.seconds:.1f} s, {report.per_minute:.0f} images/min)"
    )
    if report.leased_elsewhere:
        until = datetime.fromisoformat(report.leases_end).astimezone().strftime("%H:%M:%S")
        click.echo(
            f"{report.leased_elsewhere} images are leased by another worker (or one that was "
            f"stopped); if it does not finish them, run embed again after {until}, when its "
            "leases end (--lease sets their length)"
        )
    for failure in report.failed:
        click.echo(f"  failed: {failure['file']}: {failure['error']}", err=True)
    if report.error:
        click.echo(f"Error: stopped early: {report.error}", err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port).")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Request threads.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=lambda: os.cpu_count() or 2,
              show_default="number of CPUs", help="Files decoded at once while syncing.")
@pass_context
def up(app: Context, host: str, port: int, threads: int, jobs: int) -> None:
    """The main job: serve the library at once and keep it live.

    Creates the table, starts the web pages (they answer within seconds), then in the
    background: syncs the images folder and follows its changes, fetches the search model once
    if it is missing (EMBEDDER=none skips it; with REPLICATE_API_TOKEN, Replicate is used), and
    embeds what is missing, newest first. Search turns on when the model is loaded. Reads
    loader/.env, then browse/.env. Ctrl-C or SIGTERM stops everything and exits 0.
    """
    from .up import ServeOptions, run_up

    if not app.settings.images_dir.is_dir():
        raise click.ClickException(f"images folder {app.settings.images_dir} does not exist: "
                                   "create it and put photos in it")
    run_up(app.settings, ServeOptions(host, port, threads), jobs)


@main.command()
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=lambda: os.cpu_count() or 2,
              show_default="number of CPUs", help="Files decoded at once while syncing.")
@pass_context
def watch(app: Context, jobs: int) -> None:
    """Keep the library live without serving pages (the web app runs elsewhere).

    Syncs the images folder and follows its changes, and embeds what is missing, fetching the
    model once if needed. Ctrl-C or SIGTERM stops it and exits 0.
    """
    from .up import run_watch

    if not app.settings.images_dir.is_dir():
        raise click.ClickException(f"images folder {app.settings.images_dir} does not exist")
    run_watch(app.settings, jobs)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_context
def status(app: Context, as_json: bool) -> None:
    """Show how many images are loaded and embedded, and where they live."""
    settings = app.settings
    schema = Schema(app.conn)
    exists = schema.table_exists()
    counts = Catalogue(app.conn).counts().as_dict() if exists else {
        "images": 0, "embedded": 0, "waiting": 0, "failed": 0}
    counts["hidden"] = Catalogue(app.conn).hidden_count() if exists else 0
    index = VectorIndex(app.conn)
    layout, sizes = (index.layout(), index.sizes()) if exists else (None, None)
    info = {
        "database": describe(settings),
        "storage": open_storage(settings).describe(),
        "pgvector_version": schema.pgvector_version(),
        "expected_vector_dim": settings.expected_vector_dim,
        "table_vector_dim": schema.embedding_dimensions() if exists else None,
        "embedding_storage": layout.storage if layout else None,
        "vector_layout": layout.describe() if layout else None,
        "table_bytes": sizes.table if sizes else None,
        "vector_index_bytes": sizes.vector_index if sizes else None,
        "total_bytes": sizes.total if sizes else None,
        "index_pending": (schema.pending(settings.embedding_storage, settings.expected_vector_dim)
                          if exists else None),
        **counts,
    }
    if as_json:
        click.echo(json.dumps(info))
        return
    if not exists:
        click.echo("no image_embeddings table yet: run `loader ensure-schema` or `loader sync`")
    shown = dict(info, disk=_disk_line(sizes) if sizes else None)
    for label, key in (("database", "database"), ("storage", "storage"), ("pgvector", "pgvector_version"),
                       ("vector dimension", "table_vector_dim"), ("vectors", "vector_layout"),
                       ("disk", "disk"), ("images", "images"),
                       ("embedded", "embedded"), ("waiting", "waiting"), ("failed", "failed"),
                       ("hidden (gone)", "hidden")):
        click.echo(f"{label + ':':<18}{shown[key] if shown[key] is not None else '-'}")
    if info["index_pending"]:
        click.echo(f"note: {info['index_pending']}")


def _disk_line(sizes) -> str:
    """The table's disk use in words: total, then its parts."""
    from shared.progress import amount

    return (f"{amount(sizes.total, 'B')} (table {amount(sizes.table, 'B')}, vector index "
            f"{amount(sizes.vector_index, 'B')}, other indexes {amount(sizes.other_indexes, 'B')})")

