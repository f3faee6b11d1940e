"""Keep secrets out of what is shown: database URLs with their password masked, tokens scrubbed."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "****"
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL (or key=value connection string) with its password replaced by asterisks."""
    text = _KEYWORD_PASSWORD.sub(rf"\1{MASK}", url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return MASK  # not even URL-shaped: show nothing of it
    if parts.scheme and "@" in parts.netloc:
        userinfo, _, host = parts.netloc.rpartition("@")  # a raw '@' in a password stays left
        user, has_password, _ = userinfo.partition(":")
        if has_password:
            parts = parts._replace(netloc=f"{user}:{MASK}@{host}")
        text = urlunsplit(parts)
    return text


def url_password(url: str) -> str | None:
    """The password a database URL or connection string carries, if any."""
    match = _KEYWORD_PASSWORD.search(url)
    if match:
        return match.group(2).strip("'")
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return None
    userinfo, at, _ = netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    return password if at and has_password and password else None


def scrub(text: str, *secrets: str | None) -> str:
    """`text` with every secret, and every '@'-separated piece of one, replaced by asterisks.

    Pieces matter because a password with an unescaped '@' is split by parsers, which then
    quote its tail as a host name.
    """
    for secret in secrets:
        if not secret:
            continue
        pieces = sorted({secret, *secret.split("@")}, key=len, reverse=True)
        for piece in pieces:
            if len(piece) >= 3:
                text = text.replace(piece, MASK)
    return text
