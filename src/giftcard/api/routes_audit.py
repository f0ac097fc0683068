"""The audit log: read, filter and export every staff and API-key action."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from giftcard import audit, ids
from giftcard.api import schemas
from giftcard.api.deps import acting
from giftcard.api.problems import problems
from giftcard.customers import Role
from giftcard.http import services_dependency
from giftcard.services import Services

router = APIRouter(prefix="/v1", tags=["support"])
staff = acting(Role.SUPPORT, Role.ADMIN)


@dataclass(frozen=True)
class FilterQuery:
    filters: audit.Filters


async def filter_query(
    actor: Annotated[
        str | None,
        Query(
            max_length=audit.FILTER_LENGTH_MAX,
            description="A staff member's id (stf_…) or an API key (api_key:2).",
        ),
    ] = None,
    action: Annotated[
        str | None,
        Query(
            max_length=audit.FILTER_LENGTH_MAX,
            description="An action (card.freeze), or its start ending in a dot (card.).",
        ),
    ] = None,
    target: Annotated[
        str | None,
        Query(max_length=audit.FILTER_LENGTH_MAX, description="An id: card_…, cus_…."),
    ] = None,
    outcome: Annotated[
        str | None,
        Query(max_length=audit.FILTER_LENGTH_MAX, description="ok, or an error code."),
    ] = None,
    since: Annotated[
        str | None,
        Query(
            max_length=audit.FILTER_LENGTH_MAX,
            description="From this moment on (ISO 8601, any zone), or this date (UTC).",
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(
            max_length=audit.FILTER_LENGTH_MAX,
            description="Before this moment, or up to the end of this date (UTC).",
        ),
    ] = None,
) -> FilterQuery:
    """The filters both routes take, as query parameters; a bad one is a 422 naming it.
    Routes list it after the caller's dependency, so that a stranger is refused first. (A
    coroutine: FastAPI would run a class or plain function in its thread pool.)"""
    return FilterQuery(
        audit.parse_filters(
            actor=actor, action=action, target=target, outcome=outcome, since=since, until=until
        )
    )


def render_entry(entry: audit.AuditEntry) -> dict[str, Any]:
    return schemas.AuditEntryOut(
        id=entry.public_id,
        created_at=entry.created_at,
        actor=entry.actor,
        actor_role=entry.actor_role,
        action=entry.action,
        target=entry.target,
        reason=entry.reason,
        note=entry.note,
        outcome=entry.outcome,
        detail=entry.detail_object,
        request_id=entry.request_id,
        hash=entry.hash,
        prev_hash=entry.prev_hash,
    ).model_dump(mode="json")


@router.get(
    "/support/audit-log",
    response_model=schemas.AuditEntryList,
    responses=problems(401, 403),
    summary="Every staff and API-key action, newest first, filtered (support, admin)",
    description="Reading the log is not itself recorded; exporting it is.",
)
async def audit_log(
    actor: Annotated[audit.Actor, Depends(staff)],
    query: Annotated[FilterQuery, Depends(filter_query)],
    svc: Services = Depends(services_dependency),
    limit: Annotated[int, Query(ge=1, le=audit.PAGE_SIZE_MAX)] = audit.PAGE_SIZE_DEFAULT,
    starting_after: Annotated[str | None, Query(max_length=40)] = None,
) -> Any:
    page = await audit.page(
        svc.db,
        filters=query.filters,
        limit=limit,
        starting_after=ids.parse_cursor(ids.AUDIT_ENTRY, starting_after),
    )
    return {"data": [render_entry(entry) for entry in page.items], "has_more": page.has_more}


@router.get(
    "/support/audit-log/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The entries as CSV, oldest first, every field and both hashes.",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        **problems(401, 403),
    },
    summary="The audit log as CSV, with the same filters (support, admin); recorded",
    description="A cell starting with = + - @ a tab or an apostrophe is written with a "
    "leading apostrophe (spreadsheets would read it as a formula): remove one leading "
    "apostrophe from a cell to get the value back, e.g. to check the hashes.",
)
async def audit_log_export(
    actor: Annotated[audit.Actor, Depends(staff)],
    query: Annotated[FilterQuery, Depends(filter_query)],
    svc: Services = Depends(services_dependency),
) -> StreamingResponse:
    export = await audit.start_export(svc.unit_of_work(), actor, query.filters)
    return StreamingResponse(
        audit.export_csv(svc.db, export),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
    )
