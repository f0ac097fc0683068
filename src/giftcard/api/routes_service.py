"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import text

from giftcard.api import schemas
from giftcard.api.problems import problem_response, problems
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.http import services_dependency
from giftcard.metrics import exposition
from giftcard.services import Services

router = APIRouter(tags=["service"])


@router.get(
    "/healthz",
    response_model=schemas.Health,
    responses=problems(),
    summary="The process is alive",
)
async def healthz() -> schemas.Health:
    return schemas.Health(status="ok")


@router.get(
    "/readyz",
    response_model=schemas.Health,
    responses=problems(503),
    summary="The database answers, and Redis too when the abuse limits are counted there",
)
async def readyz(svc: Services = Depends(services_dependency)) -> Response | schemas.Health:
    try:
        async with svc.db.transaction(write=False) as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:
        return problem_response(ErrorCode.SERVICE_UNAVAILABLE, "The database does not answer.")
    try:
        await svc.limits.check_ready()
    except GiftcardError as error:
        return problem_response(error.code, error.detail)
    return schemas.Health(status="ok")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus metrics"},
        **problems(),
    },
    summary="Prometheus metrics",
)
async def metrics() -> Response:
    body, content_type = exposition()
    return Response(body, media_type=content_type)


@router.get(
    "/problems/{code}",
    response_model=schemas.ProblemType,
    responses=problems(404),
    summary="What a problem type means (the `type` of every error points here)",
)
async def problem_type(code: str) -> schemas.ProblemType:
    try:
        known = ErrorCode(code)
    except ValueError:
        raise GiftcardError(ErrorCode.NOT_FOUND, "No such problem type.") from None
    return schemas.ProblemType(
        code=known.value,
        title=known.problem_title,
        status=known.status,
        when=known.problem_when,
        what_to_do=known.problem_what_to_do,
    )
