"""Every refusal of the HTTP API becomes a response here, and only here: `{"error": message}`
with the status.

    HttpError (longtalk.errors)   its status: 401, 404, 410, 413, ...
    FieldError                    400, "field: reason" (a job the parsers refused)
    FastAPI's validation error    400, "where: what" (a path parameter of the wrong type)
    Starlette's HTTPException     its status (an unknown route: 404, a wrong method: 405)
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from longtalk.errors import FieldError, HttpError


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(HttpError)
    async def _refused(request: Request, exc: HttpError):
        return error_response(exc.status, exc.message)

    @app.exception_handler(FieldError)
    async def _field(request: Request, exc: FieldError):
        return error_response(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return error_response(400, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))
