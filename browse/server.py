"""The web app on waitress: bound at once (so its URL is known), served until a stop signal."""

from __future__ import annotations

from flask import Flask

from .state import EXTENSION


class WebServer:
    """One waitress server for one app; `run` returns when KeyboardInterrupt reaches it.

    `shared.lifecycle.StopSignals(interrupt=True)` turns SIGTERM into that KeyboardInterrupt
    too, so both end in `close`, and then in the normal exit that stops the embedded Postgres.
    """

    def __init__(self, app: Flask, host: str, port: int, threads: int, ident: str) -> None:
        from waitress import create_server

        self.app = app
        self.host = host
        self._server = create_server(app, host=host, port=port, threads=threads, ident=ident)
        self.port: int = self._server.effective_port

    @property
    def url(self) -> str:
        """Where the pages are, e.g. http://127.0.0.1:5000/."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def run(self) -> None:
        """Answer requests until KeyboardInterrupt (Ctrl-C, or SIGTERM through StopSignals)."""
        self._server.run()  # waitress catches the interrupt, stops its threads and returns

    def close(self) -> None:
        """Stop listening, then close the app's pool and workers."""
        try:
            self._server.close()
        finally:
            self.app.extensions[EXTENSION].close()
