"""Response headers every page carries, and errors shown as JSON to scripts and as pages to people."""

from __future__ import annotations

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from .state import BadUpload, SearchError, get_browse

API_PREFIX = "/api/"


def install(app: Flask) -> None:
    """Register the header hook and the error handlers."""
    app.after_request(_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(SearchError, lambda e: _error(e.status, e.code, str(e)))
    app.register_error_handler(BadUpload, lambda e: _error(e.status, "bad_upload", str(e)))


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


def _error(status: int, code: str, message: str):
    if wants_json():
        return jsonify(error={"status": status, "code": code, "message": message}), status
    return render_template("browse/error.html", status=status, code=code, message=message), status
