"""Getting the search model ready in the background: fetched once (size first, progress,
resumable), loaded, and checked against the library's vector width."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from shared.embedders.base import Embedder, width_problem
from shared.embedders.factory import NoEmbedder, make_embedder
from shared.progress import Board, Progress, TaskState, amount, say
from shared.settings import Settings


class Stopped(Exception):
    """A stop was requested while the model was being fetched (the partial file is kept)."""


@dataclass(frozen=True)
class ModelOutcome:
    """The embedder, or why there is none: `reason` for /status, `summary` for a banner."""

    embedder: Embedder | None
    reason: str = ""
    summary: str = ""


class ModelFetch:
    """Builds the configured embedder, reporting a download's progress on the terminal and the
    Board, and calling `on_percent` (for the pages' banner) as whole percents go by."""

    def __init__(self, settings: Settings, stop: threading.Event, board: Board,
                 on_percent=None) -> None:
        self.settings = settings
        self.stop = stop
        self.board = board
        self.on_percent = on_percent
        self._progress: Progress | None = None
        self._percent = -1

    def run(self, table_dimensions: int | None, text_only: bool = False) -> ModelOutcome:
        """The embedder ready to use (`text_only`: a local model's text tower alone, enough
        for search), or why not; never raises for an expected state."""
        name = self._name()
        what = "the text tower of " if text_only else ""
        self.board.put(TaskState("model", f"loading {what}{name}", state="running"))
        try:
            embedder = make_embedder(self.settings, text_only=text_only,
                                     on_progress=self._on_progress)
        except Stopped:
            self._end("stopped", "stopped: the next start continues the download")
            return ModelOutcome(None, "stopped", "stopping")
        except NoEmbedder as exc:
            off = self.settings.embedder == "none"
            self._end("off" if off else "failed", str(exc))
            return ModelOutcome(None, str(exc), "turned off by EMBEDDER=none" if off else
                                "the search model could not be set up")
        problem = width_problem(embedder, self.settings.expected_vector_dim, table_dimensions)
        if problem:
            self._end("failed", problem)
            return ModelOutcome(None, problem, "the model and the library disagree")
        self._end("done", "")
        self.board.put(TaskState("model", f"{embedder.model_id} ready", state="done"))
        return ModelOutcome(embedder)

    def _name(self) -> str:
        if self.settings.embedder == "none":
            return "no model (EMBEDDER=none)"
        if self.settings.replicate_api_token and self.settings.embedder in ("auto", "replicate"):
            return "Replicate's CLIP"
        return str(self.settings.clip_model_path or self.settings.clip_model)

    def _on_progress(self, progress) -> None:
        """Called by the download per MiB (a shared.clip.download.DownloadProgress)."""
        if self.stop.is_set():
            raise Stopped()
        if self._progress is None:
            say(f"model: fetching {self.settings.clip_model} ({amount(progress.total_bytes, 'B')}) "
                "from the Hugging Face hub, once; the pages work meanwhile, search starts when "
                "it is here")
            self._progress = Progress(
                "model", "{done} of {total} downloaded", total=progress.total_bytes,
                done=progress.done_bytes, unit="B", board=self.board,
                every_s=self.settings.live.progress_every_s)
        self._progress.set_done(progress.done_bytes)
        percent = self._progress.state.percent or 0
        if percent != self._percent and self.on_percent is not None:
            self._percent = percent
            self.on_percent(percent)

    def _end(self, state: str, note: str) -> None:
        if self._progress is not None:
            self._progress.finish(state, note if state != "done" else "")
        if state != "done":
            self.board.put(TaskState("model", self._name(), state=state, note=note))
