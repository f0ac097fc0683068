"""RFC 9457 problem responses: one shape for every error the API can give."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from giftcard.db.engine import DATABASE_UNREACHABLE_DETAIL, is_database_unreachable
from giftcard.errors import ErrorCode, GiftcardError, TooManyAttempts

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# Problem types are relative URIs served by this API (GET /problems/{code}).
TYPE_BASE = "/problems/"


class Problem(BaseModel):
    """An RFC 9457 problem document with giftcard's stable `code`."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    param: str | None = None


def problem_body(code: ErrorCode, detail: str, param: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code.value,
        "title": code.problem_title,
        "status": code.status,
        "detail": detail,
        "code": code.value,
    }
    if param is not None:
        body["param"] = param
    return body


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def problem_response(
    code: ErrorCode,
    detail: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> ProblemResponse:
    return ProblemResponse(
        problem_body(code, detail, param), status_code=code.status, headers=headers
    )


def error_response(error: GiftcardError) -> ProblemResponse:
    headers = None
    if isinstance(error, TooManyAttempts):
        headers = {"Retry-After": str(error.retry_after_s)}
    elif error.code is ErrorCode.SERVICE_UNAVAILABLE:
        # Every cause passes within moments (a restart, a busy moment, Redis back).
        headers = {"Retry-After": "1"}
    return problem_response(error.code, error.detail, error.param, headers)


def problem_json(error: GiftcardError) -> str:
    """The body `error_response` sends, byte for byte: what a replay must send again."""
    return bytes(error_response(error).body).decode()


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problem statuses a route can give."""
    return {
        status: {
            "description": _STATUS_DESCRIPTIONS.get(status, "Problem"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in sorted({*statuses, 413, 415, 422, 500, 503})
    }


_STATUS_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, unknown or expired credentials",
    403: "The caller's role may not do this",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body too large",
    415: "The body is not JSON",
    422: "Invalid input",
    429: "Too many attempts; see Retry-After",
    500: "Internal error",
    503: "Busy or not ready; nothing was done, retry",
}


def media_type_of(content_type: str | None) -> str:
    """The media type a Content-Type header names, in lower case, without its
    parameters ("" when there is none)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _param_of(location: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) if parts else None


def _json_invalid_detail(error: dict[str, Any]) -> str:
    """Where the body stops being JSON, as FastAPI gives it: the character's position
    after the body's own location."""
    position = [part for part in error.get("loc", ()) if isinstance(part, int)]
    if position:
        return f"The request body is not valid JSON (at character {position[0]})."
    return "The request body is not valid JSON."


def _validation_detail(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "missing":
        return "This field is required."
    if kind == "extra_forbidden":
        return "This field is not accepted here."
    message = str(error.get("msg", "Invalid value."))
    return message[0].upper() + message[1:] + ("" if message.endswith(".") else ".")


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem response, and the
    Problem schema the OpenAPI responses refer to."""
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        document = build_openapi()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("Problem", Problem.model_json_schema())
        return document

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(GiftcardError)
    async def _giftcard(_: Request, error: GiftcardError) -> ProblemResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> ProblemResponse:
        media_type = media_type_of(request.headers.get("content-type"))
        if media_type and not (media_type == "application/json" or media_type.endswith("+json")):
            return problem_response(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                f"Send the body as application/json, not {media_type[:60]}.",
            )
        first = error.errors()[0] if error.errors() else {}
        if first.get("type") == "json_invalid":
            # Its location is where the document breaks, not a field to name.
            return problem_response(ErrorCode.VALIDATION_ERROR, _json_invalid_detail(first))
        param = _param_of(first.get("loc", ()))
        detail = _validation_detail(first)
        if param:
            detail = f"{param}: {detail}"
        return problem_response(ErrorCode.VALIDATION_ERROR, detail, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> ProblemResponse:
        if error.status_code == 404:
            return problem_response(ErrorCode.NOT_FOUND, "There is nothing at this address.")
        if error.status_code == 405:
            return problem_response(
                ErrorCode.METHOD_NOT_ALLOWED,
                "This address does not accept this method.",
                headers=dict(error.headers or {}),
            )
        if error.status_code == 401:
            return problem_response(ErrorCode.UNAUTHORIZED, str(error.detail))
        if error.status_code == 400:
            # FastAPI's answer to a body it cannot decode at all (bytes that are not UTF-8):
            # invalid input like any other, so validation_error with its own status, 422.
            return problem_response(
                ErrorCode.VALIDATION_ERROR, "The request body is not valid JSON."
            )
        code = (
            ErrorCode.VALIDATION_ERROR
            if 400 <= error.status_code < 500
            else ErrorCode.INTERNAL_ERROR
        )
        body = problem_body(code, str(error.detail))
        body["status"] = error.status_code
        return ProblemResponse(body, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> ProblemResponse:
        if is_database_unreachable(error):
            # The Database's own methods say so already; this is for a connection made
            # any other way.
            log.warning(
                "the database did not answer",
                extra={"path": request.url.path, "error": type(error).__name__},
            )
            return problem_response(
                ErrorCode.SERVICE_UNAVAILABLE,
                DATABASE_UNREACHABLE_DETAIL,
                headers={"Cache-Control": "no-store", "Retry-After": "1"},
            )
        log.exception("unhandled error", extra={"path": request.url.path})
        # Starlette answers this outside every middleware, the one that marks API
        # answers `no-store` included, so this answer marks itself.
        return problem_response(
            ErrorCode.INTERNAL_ERROR,
            "Something went wrong on our side.",
            headers={"Cache-Control": "no-store"},
        )
