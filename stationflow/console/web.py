"""The console's web application (Starlette): routes, the token check and the replay POST.

Contracts:
- Every request passes `Guard`: with a token configured, a request must carry it (header
  `Authorization: Bearer <token>`, the `sf_console` cookie, or `?token=` once, which sets the
  cookie and redirects to the same URL without it); without a token the console only answers
  requests addressed to a loopback host name (no DNS-rebinding reads through a browser).
- Pages only read Redis. The one write, replaying a dead letter, exists only when the app was
  built with `allow_replay`; it is a POST whose form carries a per-process CSRF token and
  whose Origin (when the browser sends one) must be this console.
- Nothing the console renders comes from the settings, so no password or token is shown.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from stationflow.console import pages
from stationflow.console.sampler import Sampler

log = logging.getLogger("stationflow.console")

COOKIE = "sf_console"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass
class ConsoleConfig:
    settings: Any
    token: str | None = None
    allow_replay: bool = False
    refresh_s: float = 5.0
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class Guard:
    """ASGI middleware: the token (or, without one, a loopback Host) on every request, and
    the security headers on every response."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        req = Request(scope)
        refused = self.refusal(req)
        if refused is not None:
            await refused(scope, receive, send)
            return
        if self.token and req.query_params.get("token"):
            q = urlencode([(k, v) for k, v in req.query_params.multi_items() if k != "token"])
            resp = RedirectResponse(req.url.path + (f"?{q}" if q else ""), status_code=303)
            resp.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            await resp(scope, receive, send)
            return

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            await send(message)

        await self.app(scope, receive, with_headers)

    def refusal(self, req: Request) -> Response | None:
        if self.token is None:
            host = host_name(req.headers.get("host") or "")
            if host not in LOOPBACK_NAMES:
                return PlainTextResponse(f"refused: host {host!r} is not a loopback name (start the console "
                                         "with --token to serve other addresses)\n", status_code=403)
            return None
        given = [req.query_params.get("token"), req.cookies.get(COOKIE)]
        auth = req.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given.append(auth[7:].strip())
        if any(g and hmac.compare_digest(g.encode(), self.token.encode()) for g in given):
            return None
        return PlainTextResponse("unauthorised: this console needs its token (Authorization: Bearer TOKEN, "
                                 "or open it once with ?token=TOKEN)\n", status_code=401)


def host_name(host_header: str) -> str:
    """The name part of a Host header: "127.0.0.1:8430" -> "127.0.0.1", "[::1]:80" -> "[::1]"."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0]


def _now() -> int:
    return int(time.time() * 1000)


class Handlers:
    """The endpoints. Page reads are plain functions: Starlette runs them in its thread pool, so
    a slow Redis never stalls the event loop (the client's connection pool is thread-safe)."""

    def __init__(self, config: ConsoleConfig, r: Any, sampler: Sampler, templates: Jinja2Templates) -> None:
        self.config, self.r, self.sampler, self.templates = config, r, sampler, templates
        self.settings = config.settings

    def _answer(self, request: Request, name: str, data: dict[str, Any], status_code: int = 200) -> Response:
        """JSON under /api/, else the page's template."""
        if request.url.path.startswith("/api/"):
            return JSONResponse(_jsonable(data), status_code=status_code)
        c = self.config
        ctx = {"d": data, "refresh_s": c.refresh_s, "allow_replay": c.allow_replay, "csrf": c.csrf, "page": name}
        return self.templates.TemplateResponse(request, f"{name}.html", ctx, status_code=status_code)

    def overview(self, request: Request) -> Response:
        return self._answer(request, "overview", pages.overview(self.r, self.settings, self.sampler))

    def stations(self, request: Request) -> Response:
        data = pages.stations(self.r, self.settings, _now())
        q = request.query_params.get("q", "").strip()
        sort = request.query_params.get("sort", "last_seen_ms")
        desc = request.query_params.get("dir", "desc") == "desc"
        rows = [x for x in data["stations"] if q in x["station"]]
        if sort in ("station", "last_seen_ms", "dead_letters", "failed_runs", "stale"):
            rows.sort(key=lambda x: len(x[sort]) if sort == "stale" else x[sort], reverse=desc)
        data.update(stations=rows, q=q, sort=sort, dir="desc" if desc else "asc")
        return self._answer(request, "stations", data)

    def station(self, request: Request) -> Response:
        data = pages.station(self.r, self.settings, request.path_params["station"], _now())
        return self._answer(request, "station", data, 200 if data["known"] else 404)

    def batches(self, request: Request) -> Response:
        return self._answer(request, "batches", pages.batches(self.r, self.settings))

    def dead_letters(self, request: Request) -> Response:
        data = pages.dead_letters(self.r, self.settings, request.query_params.get("reason") or None)
        return self._answer(request, "dead_letters", data)

    def dead_letter(self, request: Request) -> Response:
        data = pages.dead_letter(self.r, self.settings, request.path_params["entry"])
        data["replayed_to"] = request.query_params.get("replayed")
        return self._answer(request, "dead_letter", data, 200 if data["entry"] else 404)

    def help(self, request: Request) -> Response:
        return self._answer(request, "help", {})

    async def replay(self, request: Request) -> Response:
        """POST /dead-letters/ID/replay: only with allow_replay, the form's CSRF token and no
        foreign Origin; answers 303 to the entry's page with where the copy went."""
        c = self.config
        if not c.allow_replay:
            return PlainTextResponse("replay is off: start the console with --allow-replay\n", status_code=403)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("csrf") or [""])[0]
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if not hmac.compare_digest(given.encode(), c.csrf.encode()) or (origin and origin != own):
            return PlainTextResponse("refused: cross-site or stale form (reload the page and try again)\n",
                                     status_code=403)
        entry_id = request.path_params["entry"]
        try:
            partition, offset = await run_in_threadpool(pages.replay, self.r, self.settings, entry_id)
        except pages.ReplayRefused as e:
            return PlainTextResponse(f"not replayed: {e}\n", status_code=409)
        log.info("console replayed dead letter %s to partition %s offset %s", entry_id, partition, offset)
        return RedirectResponse(f"/dead-letters/{entry_id}?replayed={partition}:{offset}", status_code=303)


def build_app(config: ConsoleConfig, r: Any, sampler: Sampler) -> ASGIApp:
    """The console as an ASGI app over Redis client `r`; `sampler` supplies rates and lag."""
    base = Path(str(resources.files("stationflow.console")))
    templates = Jinja2Templates(directory=str(base / "templates"))
    templates.env.filters["clock"] = clock
    h = Handlers(config, r, sampler, templates)
    routes = [
        Route("/", h.overview), Route("/api/overview", h.overview),
        Route("/stations", h.stations), Route("/api/stations", h.stations),
        Route("/station/{station}", h.station), Route("/api/station/{station}", h.station),
        Route("/batches", h.batches), Route("/api/batches", h.batches),
        Route("/dead-letters", h.dead_letters), Route("/api/dead-letters", h.dead_letters),
        Route("/dead-letters/{entry}", h.dead_letter), Route("/api/dead-letters/{entry}", h.dead_letter),
        Route("/dead-letters/{entry}/replay", h.replay, methods=["POST"]),
        Route("/help", h.help),
        Mount("/static", app=StaticFiles(directory=str(base / "static")), name="static"),
    ]
    return Guard(Starlette(routes=routes, exception_handlers={
        RedisConnectionError: redis_unavailable, RedisTimeoutError: redis_unavailable}), config.token)


async def redis_unavailable(request: Request, exc: Exception) -> Response:
    """Redis down or failing over: a one-line 503 (the page works again once Redis answers)."""
    log.error("console: %s %s: Redis unavailable: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return PlainTextResponse(f"Redis unavailable ({type(exc).__name__}: {exc}); retry in a moment\n",
                             status_code=503, headers={"retry-after": "5"})


def clock(ms: int | None) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v
