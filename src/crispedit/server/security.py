"""Request guards for ``crispedit serve``: token, Host (DNS rebinding), Origin / Fetch-Metadata, paths under root.

The guard is a plain ASGI middleware so it sees every request, static files and event streams included.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional
from urllib.parse import parse_qs, urlsplit

from crispedit.errors import InputError

TOKEN_COOKIE = "crispedit_token"
TOKEN_HEADER = "x-crispedit-token"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
MAX_JSON_BODY = 8 * 1024 * 1024  # bytes; every endpoint but the upload takes small JSON


#: the editor's own page: scripts and styles from this server only (OpenSeadragon is vendored, no CDN)
CSP_PAGE = (b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
            b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
#: the self-contained HTML quality report: its inline scripts run in a sandbox (opaque origin, no cookies), so a
#: report cannot call the API
CSP_REPORT = b"sandbox allow-scripts; default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


class PathRefused(InputError):
    """A path that leaves ``--root`` (``..``, absolute, or a symlink pointing outside). HTTP 403."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_cookie(host_header: str) -> str:
    """The token cookie's name for the server the ``Host`` header names: ``crispedit_token_<port>``.

    Browsers keep cookies per host name, not per port, so two ``crispedit serve`` runs on one machine (different
    ports, different tokens) would overwrite each other's cookie under one name and lock the first tab out."""
    _host, port = split_host(host_header)
    return f"{TOKEN_COOKIE}_{port}" if port and port.isdigit() else TOKEN_COOKIE


def new_token() -> str:
    """A URL-safe random token (``secrets.token_urlsafe``, 192 bits)."""
    return secrets.token_urlsafe(24)


def local_addresses() -> set[str]:
    """Host names and interface addresses of this machine (for the Host check when bound beyond loopback)."""
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    names.add(a.address.split("%")[0])
    except Exception:  # noqa: BLE001 - best effort; --allow-host covers the rest
        pass
    return {n.lower() for n in names if n}


def allowed_hostnames(bind_host: str, extra: Iterable[str] = ()) -> set[str]:
    """Host names the ``Host`` header may carry: loopback names, the bind address, and, for a wildcard bind,
    this machine's names and addresses, plus ``extra`` (``--allow-host``)."""
    names = set(LOOPBACK_NAMES)
    h = bind_host.strip("[]").lower()
    if h in ("0.0.0.0", "::", ""):
        names |= local_addresses()
    else:
        names.add(h)
    names |= {e.strip("[]").lower() for e in extra if e}
    return names


def split_host(value: str) -> tuple[str, Optional[str]]:
    """``'[::1]:8765' -> ('::1', '8765')``, ``'localhost' -> ('localhost', None)``."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[1:end], value[end + 1:]
        return host, rest[1:] if rest.startswith(":") else None
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, port
    return value, None


def resolve_under(root: Path, rel: Optional[str]) -> Path:
    """The real path of ``rel`` (a ``/``-separated path relative to ``root``), refusing anything outside root.

    Raises
    ------
    PathRefused
        ``rel`` is absolute, contains ``..``, a NUL byte, or resolves (symlinks followed) outside ``root``.
    """
    root = root.resolve()
    text = (rel or "").replace("\\", "/")
    if "\x00" in text:
        raise PathRefused("path contains a NUL byte", "give a plain file name")
    p = PurePosixPath(text)
    if p.is_absolute() or ".." in p.parts or (len(text) > 1 and text[1] == ":"):
        raise PathRefused(f"path '{rel}' leaves the served folder", "give a path inside --root, without '..'")
    full = (root / p).resolve()
    if full != root and not full.is_relative_to(root):
        raise PathRefused(f"path '{rel}' points outside the served folder (symlink)",
                          "serve the folder that really holds the file with --root")
    return full


def _limited(receive, limit: int):
    """Wrap an ASGI ``receive`` so that a request body over ``limit`` bytes ends the request with HTTP 413
    (FastAPI passes an ``HTTPException`` raised while it reads the body on to its exception handlers)."""
    from starlette.exceptions import HTTPException

    received = 0

    async def limited_receive():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, f"refused: request body over {limit // (1024 * 1024)} MiB "
                                         "(photos go to /api/upload)")
        return message

    return limited_receive


class Guard:
    """ASGI middleware: refuse requests with a bad Host, a foreign Origin / cross-site fetch, or no valid token.

    Parameters
    ----------
    app : ASGI app
    hostnames : set of str
        Host names accepted in the ``Host`` header (DNS-rebinding defence).
    token : str or None
        When set, every request must carry it: ``Authorization: Bearer``, ``X-Crispedit-Token``, the
        ``crispedit_token_<port>`` cookie (set by ``/?token=...``) or a ``token`` query parameter.
    """

    def __init__(self, app, hostnames: set[str], token: Optional[str]) -> None:
        self.app = app
        self.hostnames = hostnames
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self.check(scope, headers)
        if refusal is not None:
            status, message = refusal
            body = json.dumps({"error": message}).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": body})
            return
        page_csp = CSP_REPORT if scope["path"].endswith("/report") else CSP_PAGE
        if scope["type"] == "http" and scope["path"] != "/api/upload":
            receive = _limited(receive, MAX_JSON_BODY)  # also bodies sent chunked, without a Content-Length

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                         (b"referrer-policy", b"no-referrer"), (b"content-security-policy", page_csp)]
                message = dict(message, headers=list(message.get("headers", [])) + extra)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def check(self, scope, headers: dict[str, str]) -> Optional[tuple[int, str]]:
        host_header = headers.get("host", "")
        host, _port = split_host(host_header)
        if not host or host not in self.hostnames:
            return 400, (f"refused: Host '{host_header}' is not this server — open the address crispedit serve "
                         "printed (or add --allow-host NAME)")
        origin = headers.get("origin")
        method = scope.get("method", "GET")
        if origin is not None:
            o = urlsplit(origin)
            if origin == "null" or o.netloc.lower() != host_header.lower() or o.scheme not in ("http", "https"):
                return 403, f"refused: requests from origin '{origin}' are not allowed — use the editor's own page"
        site = headers.get("sec-fetch-site")
        if site == "cross-site":
            navigating = headers.get("sec-fetch-mode") == "navigate" and method == "GET" and scope["path"] == "/"
            if not navigating:
                return 403, "refused: cross-site request — use the editor's own page"
        length = headers.get("content-length", "")
        if scope["path"] != "/api/upload" and length.isdigit() and int(length) > MAX_JSON_BODY:
            return 413, f"refused: request body over {MAX_JSON_BODY // (1024 * 1024)} MiB (photos go to /api/upload)"
        if self.token is not None and not self._has_token(scope, headers):
            return 401, "refused: missing or wrong token — open the address with ?token=... that crispedit serve printed"
        return None

    def _has_token(self, scope, headers: dict[str, str]) -> bool:
        given = []
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given.append(auth[7:].strip())
        if TOKEN_HEADER in headers:
            given.append(headers[TOKEN_HEADER])
        for part in headers.get("cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == TOKEN_COOKIE or k.startswith(TOKEN_COOKIE + "_"):  # crispedit_token_<port>: see token_cookie()
                given.append(v)
        qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given += qs.get("token", [])
        return any(secrets.compare_digest(g.encode(), self.token.encode()) for g in given)  # type: ignore[union-attr]
