"""The ``url`` library: ``url()``, ``isURL()`` and the getters of a URL, with Go's ``net/url`` rules.

Upstream checks a string with ``url.ParseRequestURI`` (an absolute URI or an absolute path, the
fragment not split off) and then reads its parts with ``url.Parse``. Python's ``urllib.parse``
accepts far more, so the part of Go's parser that decides validity is restated here: the scheme,
the authority (user info, a bracketed or plain host, a numeric port), the characters a host may
hold, control characters, and percent escapes. Errors are Go's (``parse "x": invalid URI for
request``). A URL value carries the string it was made from.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

from services.apiserver.cel.library import opaque

_SCHEME_CHARS = frozenset(string.ascii_letters + string.digits + "+-.")
_HOST_OK = frozenset(string.ascii_letters + string.digits + "-_.~!$&'()*+,;=:[]<>\"%")
_PATH_SAFE = "$&+,/:;=@"  # besides letters, digits and -_.~ (Go's shouldEscape in encodePath mode)
_ENCODED_OK = frozenset(string.ascii_letters + string.digits + "-_.~!$&'()*+,;=:@[]%/")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_USERINFO_OK = frozenset(string.ascii_letters + string.digits + "-._:~!$&'()*+,;=%@")


class _URLError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class _Parts:
    scheme: str = ""
    host: str = ""
    path: str = ""
    query: str = ""


def _scheme(raw: str) -> tuple[str, str]:
    for i, ch in enumerate(raw):
        if ch == ":":
            if i == 0:
                raise _URLError("missing protocol scheme")
            return raw[:i].lower(), raw[i + 1 :]
        if ch not in _SCHEME_CHARS or (i == 0 and not ch.isalpha()):
            break
    return "", raw


def _valid_port(port: str) -> bool:
    return port == "" or (port[0] == ":" and all(c in string.digits for c in port[1:]))


def _host(host: str) -> str:
    if host.startswith("["):
        end = host.rfind("]")
        if end < 0:
            raise _URLError("missing ']' in host")
        if not _valid_port(host[end + 1 :]):
            raise _URLError(f"invalid port {opaque.go_quote(host[end + 1 :])} after host")
    elif (colon := host.rfind(":")) >= 0 and not _valid_port(host[colon:]):
        raise _URLError(f"invalid port {opaque.go_quote(host[colon:])} after host")
    if _BAD_ESCAPE.search(host):
        raise _URLError(f"invalid URL escape {opaque.go_quote(host[host.find('%') : host.find('%') + 3])}")
    for ch in host:
        if ord(ch) < 0x80 and ch not in _HOST_OK:
            raise _URLError(f"invalid character {opaque.go_quote(ch)} in host name")
    return host


def _authority(authority: str) -> str:
    at = authority.rfind("@")
    if at >= 0 and any(ch not in _USERINFO_OK and ord(ch) < 0x80 for ch in authority[:at]):
        raise _URLError("net/url: invalid userinfo")
    return _host(authority[at + 1 :])


def _parse(raw: str, *, via_request: bool) -> _Parts:
    """Go's ``url.parse``: ParseRequestURI when ``via_request``, else Parse without the fragment."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise _URLError("net/url: invalid control character in URL")
    if raw == "" and via_request:
        raise _URLError("empty url")
    if raw == "*":
        return _Parts(path="*")
    scheme, rest = _scheme(raw)
    query = ""
    if rest.endswith("?") and rest.count("?") == 1:
        rest = rest[:-1]
    else:
        rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        if scheme:
            return _Parts(scheme=scheme, query=query)  # an opaque URL (mailto:x)
        if via_request:
            raise _URLError("invalid URI for request")
        if ":" in rest.partition("/")[0]:
            raise _URLError("first path segment in URL cannot contain colon")
    host = ""
    if (scheme or (not via_request and not rest.startswith("///"))) and rest.startswith("//"):
        authority, slash, tail = rest[2:].partition("/")
        host, rest = _authority(authority), slash + tail
    if _BAD_ESCAPE.search(rest):
        pos = rest.find("%", _BAD_ESCAPE.search(rest).start())
        raise _URLError(f"invalid URL escape {opaque.go_quote(rest[pos : pos + 3])}")
    return _Parts(scheme=scheme, host=host, path=rest, query=query)


def request_uri_error(raw: str) -> str | None:
    """Go's ``url.ParseRequestURI`` error text for ``raw`` (``parse "x": ...``), None if it parses."""
    try:
        _parse(raw, via_request=True)
    except _URLError as exc:
        return f"parse {opaque.go_quote(raw)}: {exc}"
    return None


def _make(text: Any) -> dict[int, str]:
    raw = opaque.text_argument(text)
    error = request_uri_error(raw)
    if error is not None:
        raise opaque.LibraryError(f"URL parse error during conversion from string: {error}")
    return opaque.wrap(opaque.Kind.URL, raw)


def _parts(value: Any) -> _Parts:
    return _parse(opaque.unwrap(value, opaque.Kind.URL).partition("#")[0], via_request=False)


def _split_host(host: str) -> tuple[str, str]:
    colon = host.rfind(":")
    name, port = (host[:colon], host[colon + 1 :]) if colon >= 0 and _valid_port(host[colon:]) else (host, "")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name, port


def _escaped_path(value: Any) -> str:
    path = _parts(value).path
    if all(ch in _ENCODED_OK for ch in path):
        return path
    return quote(_unescape(path, plus=False), safe=_PATH_SAFE)


def _unescape(text: str, *, plus: bool) -> str:
    if _BAD_ESCAPE.search(text):
        raise _URLError("invalid URL escape")
    return unquote(text.replace("+", " ") if plus else text, errors="surrogateescape")


def _query(value: Any) -> dict[str, list[str]]:
    """Go's ``url.Query()``: pairs split on ``&``, ``+`` read as a space; a pair with ``;`` or a
    bad escape is dropped, as Go drops it."""
    out: dict[str, list[str]] = {}
    for pair in _parts(value).query.split("&"):
        if not pair or ";" in pair:
            continue
        key, _, val = pair.partition("=")
        try:
            out.setdefault(_unescape(key, plus=True), []).append(_unescape(val, plus=True))
        except _URLError:
            continue
    return out


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "url": _make,
    "isURL": lambda text: request_uri_error(opaque.text_argument(text)) is None,
    "getScheme": lambda value: _parts(value).scheme,
    "getHost": lambda value: _parts(value).host,
    "getHostname": lambda value: _split_host(_parts(value).host)[0],
    "getPort": lambda value: _split_host(_parts(value).host)[1],
    "getEscapedPath": _escaped_path,
    "getQuery": _query,
}
