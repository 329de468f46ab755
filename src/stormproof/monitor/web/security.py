"""Who may talk to ``stormproof serve``, and what every answer carries.

* **Bind.** 127.0.0.1 by default. Any other address needs a token (``--token`` or
  ``STORMPROOF_TOKEN``) and the server refuses to start without one (``check_bind``).
* **Token.** When set, every request needs it: ``Authorization: Bearer TOKEN`` (API
  clients, Prometheus), or the cookie a browser gets by opening any page once with
  ``?token=TOKEN`` (the server sets it and redirects to the URL without the token).
* **Host.** Bound to loopback, only ``Host: 127.0.0.1|localhost|[::1]`` is answered, so a
  web page cannot reach the dashboard through DNS rebinding.
* **CSRF.** A state-changing request (the cancel ``POST``) needs the header
  ``X-Stormproof-CSRF`` with the server's CSRF token, which only a page of the same
  origin can read (``GET /api/session``; there is no CORS), and a matching ``Origin``.
* **Headers.** A strict Content-Security-Policy (scripts and styles from this server only:
  no inline script runs even if some text were not escaped), ``nosniff``, no referrer.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from stormproof.errors import StormproofError

TOKEN_ENV: Final = "STORMPROOF_TOKEN"
TOKEN_COOKIE: Final = "stormproof_token"
CSRF_HEADER: Final = "X-Stormproof-CSRF"
MIN_TOKEN_CHARS: Final = 16
LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse (exit 2) to serve beyond this machine without a token, or with a weak one."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise StormproofError(
            f"--token / {TOKEN_ENV}: a token needs at least {MIN_TOKEN_CHARS} characters; "
            "make one with: python -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    if token is None and not is_loopback(host):
        raise StormproofError(
            f"--host {host}: serving beyond this machine needs a token, or anyone who can "
            "reach the port could read every run and its logs and cancel runs; pass "
            f"--token TOKEN or set {TOKEN_ENV} (make one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe())'), or serve on 127.0.0.1 (the default)"
        )


@dataclass(frozen=True)
class Guard:
    token: str | None
    loopback_only: bool
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    async def __call__(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = self._refusal(request)
        if response is None:
            response = self._token_in_url(request)
        if response is None:
            response = await call_next(request)
        return self._harden(request, response)

    # ------------------------------------------------------------------ checks
    def _refusal(self, request: Request) -> Response | None:
        host = (request.url.hostname or "").lower()
        if self.loopback_only and host not in LOOPBACK_NAMES:
            return PlainTextResponse(f"unknown host {host!r}: use 127.0.0.1", 400)
        if self.token is not None and not self._has_token(request):
            return _unauthorized(request)
        if request.method not in _SAFE_METHODS and not self._same_origin(request):
            return JSONResponse(
                {
                    "detail": f"refused: a {request.method} needs the {CSRF_HEADER} header "
                    "of a page of this dashboard (GET /api/session gives it)"
                },
                403,
            )
        return None

    def _has_token(self, request: Request) -> bool:
        assert self.token is not None
        auth = request.headers.get("authorization", "")
        given = [
            auth[7:].strip() if auth.lower().startswith("bearer ") else "",
            request.cookies.get(TOKEN_COOKIE, ""),
            request.query_params.get("token", "") if request.method == "GET" else "",
        ]
        return any(g and hmac.compare_digest(g.encode(), self.token.encode()) for g in given)

    def _same_origin(self, request: Request) -> bool:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent.encode(), self.csrf.encode()):
            return False
        origin = request.headers.get("origin")
        if origin is None:  # not a browser's cross-site request (browsers send it on POST)
            return True
        expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
        return origin == expected

    def _token_in_url(self, request: Request) -> Response | None:
        """A page opened with ``?token=``: keep it in a cookie, and take it out of the URL
        (so it is not left in the history or shown on screen)."""
        if self.token is None or "token" not in request.query_params:
            return None
        if request.url.path.startswith(("/api/", "/metrics")):
            return None
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
        response = RedirectResponse(target, 303)
        response.set_cookie(
            TOKEN_COOKIE,
            self.token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @staticmethod
    def _harden(request: Request, response: Response) -> Response:
        headers = response.headers
        headers["Content-Security-Policy"] = CSP
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
        headers["X-Frame-Options"] = "DENY"
        if request.url.path.startswith("/api/"):
            headers["Cache-Control"] = "no-store"
        return response


def _unauthorized(request: Request) -> Response:
    message = (
        "this dashboard needs its token: send `Authorization: Bearer TOKEN`, "
        "or open the page once as /?token=TOKEN"
    )
    if request.url.path.startswith(("/api/", "/metrics")):
        response: Response = JSONResponse({"detail": message}, 401)
    else:
        response = PlainTextResponse(message, 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="stormproof"'
    return response
