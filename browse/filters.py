"""Filters in the URL: read from query parameters (a 400 naming the bad one), written back into
links, and shown as chips that each remove themselves."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Mapping

from flask import abort

from shared.store import Filters

NAMES = ("folder", "taken_after", "taken_before", "camera", "has_location")
MAX_TEXT = 1000
_DAY = re.compile(r"\d{4}-\d\d-\d\d", re.ASCII)
_YES, _NO = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class Chip:
    """One active filter as the page shows it, and the query without it."""

    name: str
    label: str
    without: dict[str, str]


def parse_filters(args: Mapping[str, str]) -> Filters:
    """The filters a request asks for; an empty parameter is no filter."""
    after, before = _day(args, "taken_after"), _day(args, "taken_before")
    if after and before and after > before:
        abort(400, f"taken_after ({after}) is later than taken_before ({before})")
    return Filters(
        folder=_text(args, "folder"),
        taken_after=after,
        taken_before=before,
        camera=_text(args, "camera"),
        has_location=_flag(args, "has_location"),
    )


def filter_args(filters: Filters) -> dict[str, str]:
    """Query parameters that ask for these filters again (for links and forms)."""
    out = {}
    for name in NAMES:
        value = getattr(filters, name)
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif value is not None:
            out[name] = value.isoformat() if isinstance(value, date) else value
    return out


def chips(filters: Filters) -> list[Chip]:
    """Each active filter, labelled for people, with the parameters of the page without it."""
    labels = {
        "folder": lambda v: f"Folder: {v}",
        "taken_after": lambda v: f"From {v.isoformat()}",
        "taken_before": lambda v: f"Until {v.isoformat()}",
        "camera": lambda v: f"Camera: {v}",
        "has_location": lambda v: "With a place" if v else "Without a place",
    }
    return [Chip(name, labels[name](getattr(filters, name)), filter_args(filters.without(name)))
            for name in NAMES if getattr(filters, name) is not None]


def _text(args: Mapping[str, str], name: str) -> str | None:
    value = (args.get(name) or "").strip()
    if len(value) > MAX_TEXT:
        abort(400, f"{name} is too long ({MAX_TEXT} characters at most)")
    # Postgres text cannot hold NUL (nor can a file name); a lone surrogate is no character.
    if any(ch == "\x00" or unicodedata.category(ch) == "Cs" for ch in value):
        abort(400, f"{name} holds a NUL or an invalid character")
    return value or None


def _day(args: Mapping[str, str], name: str) -> date | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    try:
        if not _DAY.fullmatch(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        abort(400, f"{name} must be a date as YYYY-MM-DD, got {raw[:20]!r}")


def _flag(args: Mapping[str, str], name: str) -> bool | None:
    raw = (args.get(name) or "").strip().lower()
    if not raw:
        return None
    if raw in _YES or raw in _NO:
        return raw in _YES
    abort(400, f"{name} must be true or false, got {raw[:20]!r}")
