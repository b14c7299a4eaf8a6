"""Domain errors and the one place they become HTTP responses.

Services raise :class:`ApiError` (or a subclass) with a stable machine-readable ``code``; the
handlers here turn it, and FastAPI's validation errors, into ``{"code", "detail"}`` JSON.
Routes never build error responses themselves.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """An expected refusal: ``status`` for HTTP, ``code`` for programs, ``detail`` for people."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        detail: str = "",
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.code)
        self.detail = detail or (code or self.code).replace("_", " ")
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers


class NotAuthenticated(ApiError):
    status, code = 401, "not_authenticated"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    """Also what a foreign object answers: it must look exactly like a missing one."""

    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class TooLarge(ApiError):
    status, code = 413, "too_large"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


class ErrorOut(BaseModel):
    """Every refusal's body: ``code`` for programs, ``detail`` for people (a list of field
    errors, each with ``loc``, ``msg`` and ``type``, when ``code`` is ``validation_error``)."""

    code: str
    detail: Any


#: Documents :class:`ErrorOut` for every 4xx of every route (the app passes it to FastAPI), so
#: the schema promises what the handlers below really send.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorOut, "description": "Refused: see `code` and `detail`."}
}


def _body(code: str, detail: Any) -> dict[str, Any]:
    return {"code": code, "detail": detail}


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = dict(exc.headers or {})
    if exc.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(_body(exc.code, exc.detail), status_code=exc.status, headers=headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse(_body("validation_error", jsonable_encoder(errors)), status_code=422)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
        exc.status_code, "http_error"
    )
    return JSONResponse(_body(code, exc.detail), status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
