"""Keep secrets out of what is shown: database URLs with their password masked, tokens scrubbed."""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "****"
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,19}://)(.*)", re.DOTALL)
# A libpq key=value pair ("host=db", "port = 5432", "password='a b'"), else a stray word.
_TOKEN = re.compile(r"(\w+\s*=\s*(?:'(?:[^'\\]|\\.)*'|\S+))|(\S+)")
# Where parsers split a mistyped password: libpq's URI parser stops at '@' and '/', the port
# at ':', a query at '?', '&' and '=', a bad escape at '%'.
_SPLITTERS = re.compile(r"[@/:?#&=%\s]+")


def mask_url(url: str) -> str:
    """The URL (or key=value connection string) with its password replaced by asterisks.

    A password that is not escaped (an '@', '#' or '/' in it) is masked all the same: all
    that lies between the user name's ':' and the last '@' is hidden.
    """
    text = _KEYWORD_PASSWORD.sub(rf"\1{MASK}", url)
    match = _SCHEME.match(text)
    if match is None:
        return _mask_stray_words(text)
    scheme, rest = match.groups()
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return text
    user, has_password, _ = userinfo.partition(":")
    return f"{scheme}{user}:{MASK}@{host}" if has_password else text


def url_password(url: str) -> str | None:
    """The password a database URL or connection string carries, if any."""
    match = _KEYWORD_PASSWORD.search(url)
    if match:
        return match.group(2).strip("'")
    scheme = _SCHEME.match(url)
    if scheme is None:
        return None
    userinfo, at, _ = scheme.group(2).rpartition("@")
    _user, has_password, password = userinfo.partition(":")
    return password if at and has_password and password else None


def url_secrets(url: str) -> list[str]:
    """Everything of `url` that must not be shown: its password (as written and decoded, and
    each piece a parser could quote alone) and, in a key=value string, any stray word."""
    found = [] if _SCHEME.match(url) else _stray_words(url)
    password = url_password(url)
    if password:
        for form in {password, unquote(password)}:
            found.append(form)
            found.extend(_SPLITTERS.split(form))
    return [secret for secret in found if secret]


def scrub(text: str, *secrets: str | None) -> str:
    """`text` with every secret, and every '@'-separated piece of one, replaced by asterisks.

    Pieces matter because a password with an unescaped '@' is split by parsers, which then
    quote its tail as a host name.
    """
    pieces = {piece for secret in secrets if secret for piece in (secret, *secret.split("@"))}
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= 3:
            text = text.replace(piece, MASK)
    return text


def _stray_words(text: str) -> list[str]:
    """Words of a key=value connection string that belong to no pair (a pasted password?)."""
    return [match.group(2) for match in _TOKEN.finditer(text) if match.group(2)]


def _mask_stray_words(text: str) -> str:
    return _TOKEN.sub(lambda match: match.group(1) or MASK, text)
