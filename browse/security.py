"""Response headers every page carries, and errors shown as JSON to scripts and as pages to people."""

from __future__ import annotations

import psycopg
from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from .state import BadUpload, DatabaseDown, SearchError, get_browse

API_PREFIX = "/api/"
RETRY_AFTER_S = 5  # what 503s for a busy or unreachable backend tell clients to wait


def install(app: Flask) -> None:
    """Register the header hook and the error handlers."""
    app.after_request(_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(SearchError, _search_error)
    app.register_error_handler(BadUpload, lambda e: _error(e.status, "bad_upload", str(e)))
    app.register_error_handler(DatabaseDown, _database_down)
    app.register_error_handler(psycopg.OperationalError, _database_lost)


def content_security_policy() -> str:
    """Only this origin's scripts and styles; images also from IMAGE_BASE_URL in R2 mode."""
    origin = get_browse().image_origin()
    images = "'self' data: blob:" + (f" {origin}" if origin else "")
    return (
        "default-src 'self'; "
        f"img-src {images}; "
        "script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def _headers(response: Response) -> Response:
    location = response.headers.get("Location")
    if location and location.startswith(request.host_url):
        # Werkzeug's own redirects (e.g. '//' merged into '/') name the host the client sent:
        # keep the path only, so a forged Host header is never echoed back.
        response.headers["Location"] = "/" + location[len(request.host_url):]
    response.headers.setdefault("Content-Security-Policy", content_security_policy())
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def wants_json() -> bool:
    """API paths always answer JSON."""
    return request.path.startswith(API_PREFIX)


def _http_error(exc: HTTPException):
    code = (exc.name or "error").lower().replace(" ", "_")
    return _error(exc.code or 500, code, exc.description or exc.name)


def _search_error(exc: SearchError):
    retry = RETRY_AFTER_S if exc.code == "busy" else None
    return _error(exc.status, exc.code, str(exc), retry_after=retry)


def _database_down(exc: DatabaseDown):
    return _error(503, "database_unavailable",
                  f"{exc}; thumbnails still load, try again in a moment",
                  retry_after=RETRY_AFTER_S)


def _database_lost(exc: psycopg.OperationalError):
    """The connection broke (or a query timed out) in the middle of a request."""
    get_browse().database_failed(exc)
    return _database_down(DatabaseDown("the database stopped answering"))


def _error(status: int, code: str, message: str, retry_after: int | None = None):
    if wants_json():
        response = jsonify(error={"status": status, "code": code, "message": message})
    else:
        response = Response(render_template("browse/error.html", status=status, code=code,
                                            message=message), mimetype="text/html")
    response.status_code = status
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response
