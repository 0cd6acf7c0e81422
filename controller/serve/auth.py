"""Who may control campaigns from the dashboard. Viewing needs nothing; every request that changes anything
needs the control token and must come from the dashboard's own pages.

- The token is made at start and printed with the URL (as Jupyter does), or configured: the environment
  variable CLOSEDLOOP_DASHBOARD_TOKEN (a password the lab shares; not a command-line option, which other
  users could read in the process list). Opening a page with `?token=...` (or entering it on the page)
  sets an HttpOnly, SameSite=Strict cookie; scripts may send `Authorization: Bearer TOKEN` instead.
- Cross-site requests: a state-changing request must carry the header `X-Closedloop-Control: 1` and a JSON
  body. A form on another site can set neither, and a script on another site that tries is stopped by the
  browser's CORS preflight, which this server never grants. An `Origin` header, when present, must be this
  server's own.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets

from starlette.requests import Request

TOKEN_VARIABLE = "CLOSEDLOOP_DASHBOARD_TOKEN"
COOKIE = "closedloop_control"
CONTROL_HEADER = "x-closedloop-control"


class ControlAuth:
    """The dashboard's control token (None: the dashboard is view-only)."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    @classmethod
    def from_environment(cls, *, view_only: bool = False) -> ControlAuth:
        """The configured token, or a new random one; none when `view_only`."""
        if view_only:
            return cls(None)
        configured = os.environ.get(TOKEN_VARIABLE)
        if configured is not None and not re.fullmatch(r"[!-~]{8,}", configured):
            # It travels in a cookie and a URL: printable ASCII, and not so short that it can be guessed.
            raise ValueError(f"{TOKEN_VARIABLE} must be at least 8 printable ASCII characters, no spaces")
        return cls(configured or secrets.token_urlsafe(24))

    @property
    def configured(self) -> bool:
        return bool(os.environ.get(TOKEN_VARIABLE))

    def accepts(self, given: str | None) -> bool:
        """Whether `given` is the token (compared in constant time)."""
        return self.token is not None and given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def may_control(self, request: Request) -> bool:
        """Whether this browser (its cookie) or script (its bearer token) holds the token."""
        bearer = request.headers.get("authorization", "")
        given = bearer[7:] if bearer.lower().startswith("bearer ") else request.cookies.get(COOKIE)
        return self.accepts(given)

    def refusal(self, request: Request) -> str | None:
        """Why a state-changing request is refused, or None when it may go ahead."""
        not_from_page = self.not_from_page(request)
        if not_from_page is not None:
            return not_from_page
        if not self.may_control(request):
            return "the control token is missing or wrong: open the URL `closedloop serve` printed, or enter the token"
        return None

    def not_from_page(self, request: Request) -> str | None:
        """Why a request cannot have come from the dashboard's own page (or control is off), or None."""
        if self.token is None:
            return "this dashboard is view-only (started with --view-only)"
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.headers.get(CONTROL_HEADER) != "1" or media_type != "application/json":
            return "not a request from the dashboard's page (X-Closedloop-Control header and a JSON body needed)"
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return f"cross-site request from {origin} refused"
        return None
