"""Who may call the server: a bearer token when one is set.

``deepspark serve`` listens on 127.0.0.1 unless told otherwise; on any other interface it wants a
token (``--token`` or ``$DEEPSPARK_SERVE_TOKEN``), unless the user says a reverse proxy in front
authenticates (``--no-token``). With a token, every route but the load balancers' ``/ping`` and
``/health`` needs ``Authorization: Bearer TOKEN``; a browser opens the page once as
``/?token=TOKEN``, which sets a same-site cookie that the page's own requests carry.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

#: The environment variable holding the token (safer than the command line, which ``ps`` shows).
TOKEN_VARIABLE = "DEEPSPARK_SERVE_TOKEN"
#: The cookie a browser keeps the token in after opening ``/?token=...``.
COOKIE = "deepspark_token"
#: Routes that answer without a token (liveness and readiness probes).
OPEN_PATHS = frozenset({"/ping", "/health"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError:
            return False
        return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


class TokenAuth:
    """ASGI middleware: requests without the token get 401 with one JSON line.

    Args:
        app: The ASGI app to protect.
        token: The shared secret; compared in constant time.
    """

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value for key, value in scope["headers"]}
        given = _bearer(headers.get("authorization", b"")) or _cookie(headers.get("cookie", b""))
        if given is not None and hmac.compare_digest(given, self.token):
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        offered = query.get("token", [""])[0].encode()
        if scope["path"] == "/" and offered and hmac.compare_digest(offered, self.token):
            await _set_cookie_and_reload(send, offered)
            return
        await _unauthorized(send)


def _bearer(header: bytes) -> bytes | None:
    scheme, _, value = header.partition(b" ")
    return value.strip() if scheme.lower() == b"bearer" and value.strip() else None


def _cookie(header: bytes) -> bytes | None:
    if not header:
        return None
    cookies = SimpleCookie()
    try:
        cookies.load(header.decode("latin-1"))
    except Exception:  # noqa: BLE001  a malformed Cookie header is no token
        return None
    morsel = cookies.get(COOKIE)
    return morsel.value.encode() if morsel is not None else None


async def _set_cookie_and_reload(send: Send, token: bytes) -> None:
    cookie = f"{COOKIE}={token.decode()}; Path=/; HttpOnly; SameSite=Strict"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode("latin-1"))],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _unauthorized(send: Send) -> None:
    body = json.dumps(
        {
            "error_code": "UNAUTHENTICATED",
            "message": "This server needs its token: send 'Authorization: Bearer TOKEN' (a "
            "browser: open /?token=TOKEN once).",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="deepspark"'),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
