"""The ASGI app over one output root (`create_app`): the pages (diffrep.serve.views), the
thumbnails, the verdicts' export, and clip-retrieval's protocol (diffrep.serve.knn).

Every error a request can cause is a 4xx with a one-line reason (HTML for pages, JSON
for the API) and the app keeps serving; with a token, every route needs it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from diffrep.data.images import SkipSample
from diffrep.serve import knn, views
from diffrep.serve.catalog import Forbidden, NotFound
from diffrep.serve.config import ServeConfig
from diffrep.serve.media import SIZES, parse_box
from diffrep.serve.pages import error_page
from diffrep.serve.state import ServeState, TooLarge, int_param

log = logging.getLogger("diffrep")
API_PREFIXES = ("/knn-service", "/indices-list", "/metadata", "/thumb/")
TOKEN_COOKIE = "diffrep_token"


def _size(request: Request) -> int:
    size = int_param(request.query_params.get("size"), "size", 160)
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    return size


def thumb_train(request: Request) -> Response:
    st: ServeState = request.app.state.serve
    data = st.thumbs.training(request.path_params["index"], int(request.path_params["image_id"]),
                              _size(request), parse_box(request.query_params.get("box")))
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def thumb_member(request: Request) -> Response:
    st: ServeState = request.app.state.serve
    q = request.query_params
    if not q.get("tar") or not q.get("member"):
        raise ValueError("tar and member are required")
    data = st.thumbs.member(q["tar"], q["member"], _size(request), parse_box(q.get("box")))
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def reviews_parquet(request: Request) -> FileResponse:
    st: ServeState = request.app.state.serve
    return FileResponse(st.reviews.export(), media_type="application/vnd.apache.parquet",
                        filename="verdicts.parquet")


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith(API_PREFIXES) or "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"error": message}, status_code=status)
    return HTMLResponse(error_page(status, message), status_code=status)


def _errors() -> dict:
    def handler(status: int) -> Callable:
        async def handle(request: Request, exc: Exception) -> Response:
            return _error(request, status, str(exc) or type(exc).__name__)
        return handle

    async def http(request: Request, exc: HTTPException) -> Response:
        return _error(request, exc.status_code, str(exc.detail))

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("serve: %s %s failed", request.method, request.url.path)
        return _error(request, 500, f"internal error ({type(exc).__name__}); see the server log")

    return {NotFound: handler(404), Forbidden: handler(403), TooLarge: handler(413),
            SkipSample: handler(422), ValueError: handler(400), HTTPException: http,
            Exception: unexpected}


class TokenAuth:
    """With a token, every request needs it: 'Authorization: Bearer <token>', the cookie
    set by a first visit with ?token=<token> (then redirected without it), else 401."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.token is None:
            return await self.app(scope, receive, send)
        request = Request(scope)
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or \
            request.cookies.get(TOKEN_COOKIE, "")
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return await self.app(scope, receive, send)
        query_token = request.query_params.get("token", "")
        if query_token and hmac.compare_digest(query_token.encode(), self.token.encode()):
            rest = request.url.remove_query_params("token")
            response = RedirectResponse(rest.path + (f"?{rest.query}" if rest.query else ""), status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            return await response(scope, receive, send)
        response = _error(request, 401, "this server needs its token (Authorization: Bearer <token>, "
                                        "or open it once with ?token=<token>)")
        return await response(scope, receive, send)


def create_app(cfg: ServeConfig, state: ServeState | None = None) -> Starlette:
    """The app over cfg.root; `state` (already opened) is used as is, else opened here,
    before the first request (a root without outputs, or a tampered index, fails now)."""
    state = state or ServeState.open(cfg)
    routes = [
        Route("/", views.home),
        Route("/search", views.search, methods=["GET", "POST"]),
        Route("/scans", views.scans),
        Route("/scans/{run}", views.scan_run),
        Route("/dedup", views.dedup),
        Route("/dedup/{model}", views.dedup_groups),
        Route("/dedup/{model}/group/{group_id:int}", views.dedup_group),
        Route("/rankings", views.rankings),
        Route("/rankings/{run}", views.ranking_run),
        Route("/review", views.review, methods=["POST"]),
        Route("/reviews", views.reviews_page),
        Route("/reviews.parquet", reviews_parquet),
        Route("/thumb/train/{index}/{image_id:int}", thumb_train),
        Route("/thumb/member", thumb_member),
        Route("/knn-service", knn.knn_service, methods=["POST"]),
        Route("/indices-list", knn.indices_list),
        Route("/metadata", knn.metadata, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers=_errors(),
                    middleware=[Middleware(TokenAuth, token=cfg.resolved_token())])
    app.state.serve = state
    return app
