"""The dashboard's web app (Starlette, served by uvicorn): the campaign list and one page per campaign,
updated by server-sent events with no reload.

Routes:
  GET /                                  the campaigns (status, progress, best, last activity, badge)
  GET /campaign/{key}                    one campaign, live
  GET /api/campaigns                     the list as JSON
  GET /api/campaign/{key}                a campaign's state as JSON (controller.serve.state)
  GET /api/campaign/{key}/events         server-sent events: `change` whenever the campaign file changes
  GET /api/campaign/{key}/model          the model's view (a GP fit: asked for only when the page shows it)
  GET /static/plotly.min.js              plotly's own bundle from the installed package: the page works offline
  POST /api/login                        {"token"}: sets the control cookie (controller.serve.auth)
  POST /api/campaign/{key}/control       {"action", "trial", "values", "operator"}: a decision, pause, resume
                                         or abort, written to the campaign's control file (controller.serve.control)

The server never writes a campaign file: every request opens it read-only (WAL readers never block the
writer), and control requests go to the control file beside it, which the running campaign reads. A key
naming anything but a served campaign file is 404 (controller.serve.folder). Any page opened with
`?token=TOKEN` sets the control cookie and is sent again without it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import plotly
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from closedloop.controller.protocol.model import ProtocolError
from closedloop.controller.serve.auth import COOKIE, ControlAuth
from closedloop.controller.serve.caches import ComputedOnce, StateCache, Throttled
from closedloop.controller.serve.control import Refused, control_request
from closedloop.controller.serve.folder import ServedCampaigns, UnknownCampaign
from closedloop.controller.serve.pages import campaign_page, list_page
from closedloop.controller.serve.state import (
    campaign_figures,
    campaign_state,
    change_marker,
    model_figures,
    result_count,
)
from closedloop.controller.store.control import ControlFileError
from closedloop.controller.store.errors import StoreError

POLL_S = 0.25  # how often an open page's stream looks at its campaign file
MIN_EVENT_INTERVAL_S = 0.75  # a result shows within POLL_S + this: under the 1 s the dashboard promises
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def make_app(paths: list[Path], *, auth: ControlAuth | None = None, poll_s: float = POLL_S,
             hosts: list[str] | None = None) -> Starlette:
    """The dashboard over the campaign files in `paths` (folders and files). Without `auth` it is view-only.
    `hosts`: the only Host headers answered (a page of another site whose name resolves to this address
    (DNS rebinding) must not read the campaigns); None answers any."""
    served = ServedCampaigns(paths)
    auth = auth or ControlAuth(None)

    def path_of(request: Request) -> Path:
        try:
            return served.path(request.path_params["key"])
        except UnknownCampaign as exc:
            raise HTTPException(404, str(exc)) from None

    def with_token(request: Request) -> Response | None:
        """A page opened with ?token=: the cookie is set and the page sent again without the token in its URL
        (so it is not kept in the history or shown over a shoulder)."""
        given = request.query_params.get("token")
        if given is None:
            return None
        if not auth.accepts(given):
            return HTMLResponse("wrong control token: copy the URL `closedloop serve` printed", status_code=403)
        response = RedirectResponse(request.url.remove_query_params("token").path, status_code=303)
        set_cookie(response, given)
        return response

    async def index(request: Request) -> Response:
        redirect = with_token(request)
        if redirect is not None:
            return redirect
        rows = await run_in_threadpool(served.rows)
        return HTMLResponse(list_page([r.as_json() for r in rows]))

    async def campaigns(request: Request) -> Response:
        rows = await run_in_threadpool(served.rows)
        return JSONResponse([r.as_json() for r in rows])

    async def page(request: Request) -> Response:
        path_of(request)
        redirect = with_token(request)
        if redirect is not None:
            return redirect
        return HTMLResponse(campaign_page(request.path_params["key"]))

    markers = Throttled(change_marker, poll_s)  # every open page's stream shares one look per poll
    figures = ComputedOnce(result_count, campaign_figures)  # rebuilt once per new result, not per write
    states = StateCache(markers, lambda path: json.dumps({**campaign_state(path), **figures.get(path)}).encode())

    async def state(request: Request) -> Response:
        seen = request.query_params.get("v", "")  # the marker of the event that made the page ask
        at_least = tuple(int(v) for v in seen.split(",")) if re.fullmatch(r"[0-9]+(,[0-9]+)*", seen) else None
        shared = await run_in_threadpool(states.get, path_of(request), at_least)
        mine = json.dumps({"control": auth.may_control(request), "view_only": auth.token is None}).encode()
        return Response(mine[:-1] + b", " + shared[1:], media_type="application/json")  # {mine, ...shared}

    models = ComputedOnce(result_count, model_figures)  # a fit takes CPU: again only after a new result

    async def model(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(models.get, path_of(request)))

    async def login(request: Request) -> Response:
        refusal = auth.not_from_page(request)
        if refusal is not None:  # checked before the body is read: a stranger's body is never parsed
            return JSONResponse({"error": refusal}, status_code=403)
        body = await _json(request)
        token = body.get("token") if isinstance(body, dict) else None
        if refusal is None and not (isinstance(token, str) and auth.accepts(token)):
            refusal = "wrong control token: copy it from where `closedloop serve` printed it"
        if refusal is not None:
            return JSONResponse({"error": refusal}, status_code=403)
        response = JSONResponse({"control": True})
        set_cookie(response, str(token))
        return response

    async def control(request: Request) -> Response:
        refusal = auth.refusal(request)
        if refusal is not None:
            return JSONResponse({"error": refusal}, status_code=403)
        path = path_of(request)
        body = await _json(request)
        operator = _printable(str(body.get("operator") or "")) if isinstance(body, dict) else ""
        client = request.client.host if request.client else "?"
        by = f"{operator or 'someone'} on the dashboard from {client}"
        try:
            request_id = await run_in_threadpool(control_request, path, body, by)
        except Refused as exc:
            return JSONResponse({"error": str(exc), "fields": exc.fields}, status_code=exc.status)
        except ControlFileError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse({"request": request_id, "by": by}, status_code=202)

    async def events(request: Request) -> Response:
        path = path_of(request)

        async def changes() -> AsyncIterator[dict[str, str]]:
            last, sent_at = None, -math.inf
            while not await request.is_disconnected():
                marker = await run_in_threadpool(markers.get, path)
                # At most one event a second: a campaign in virtual time writes many times a second, and
                # every open page redrawing on each write would take the CPU the campaign runs on.
                if marker != last and time.monotonic() - sent_at >= MIN_EVENT_INTERVAL_S:
                    last, sent_at = marker, time.monotonic()
                    yield {"event": "change", "data": ",".join(map(str, marker))}
                await asyncio.sleep(poll_s)

        return EventSourceResponse(changes(), ping=15)

    async def plotly_js(request: Request) -> Response:
        # The same bundle for the life of the installed plotly: pages after the first load it from cache.
        return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    async def unreadable(request: Request, exc: Exception) -> Response:
        # A served file that is damaged, or was replaced by something that is not a campaign, while served.
        return JSONResponse({"error": str(exc)}, status_code=422)

    middleware = [] if hosts is None else [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]
    return Starlette(middleware=middleware, exception_handlers={StoreError: unreadable, ProtocolError: unreadable}, routes=[
        Route("/", index),
        Route("/api/campaigns", campaigns),
        Route("/campaign/{key:path}", page),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/campaign/{key:path}/control", control, methods=["POST"]),
        Route("/api/campaign/{key:path}/events", events),
        Route("/api/campaign/{key:path}/model", model),
        Route("/api/campaign/{key:path}", state),
        Route("/static/plotly.min.js", plotly_js),
        Route("/favicon.ico", lambda request: Response(status_code=204)),  # none: not a 404 in every console
    ])


def set_cookie(response: Response, token: str) -> None:
    # HttpOnly: no script on the page can read it; SameSite=Strict: no other site's request carries it.
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")


MAX_BODY = 64 * 1024  # a decision or a login is a few hundred bytes


async def _json(request: Request) -> Any:
    """The request's JSON body, or None when it is not JSON, too large or too deeply nested."""
    body = await request.body()
    if len(body) > MAX_BODY:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _printable(name: str) -> str:
    """An operator's name as the journal and the campaign's terminal show it: printable, at most 60 characters."""
    return "".join(c for c in name if c.isprintable()).strip()[:60]
