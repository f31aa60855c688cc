from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from inbox_service.core.deps import CurrentCaller, CurrentClock, CurrentSettings, Session
from inbox_service.core.errors import problems
from inbox_service.csat import service
from inbox_service.csat.models import CsatRating
from inbox_service.csat.schemas import CsatIn, CsatList, CsatOut
from inbox_service.csat.tokens import derive_keys

router = APIRouter(tags=["csat"], responses=problems(422, 429))


def _out(rating: CsatRating) -> CsatOut:
    return CsatOut.model_validate(rating, from_attributes=True)


@router.post(
    "/v1/csat/{token}",
    response_model=CsatOut,
    status_code=201,
    responses=problems(404, 409, 410),
    openapi_extra={"security": []},  # the token in the path is the credential
)
async def submit_rating(
    token: Annotated[str, Path(max_length=256)],
    body: CsatIn,
    session: Session,
    clock: CurrentClock,
    settings: CurrentSettings,
) -> CsatOut:
    """Record the customer's score (no API key: the signed link is the credential). Once
    per resolution cycle (409 after); 410 once the link expired; 404 for a bad link."""
    secret = settings.inbox_secret_key
    keys = derive_keys(secret.get_secret_value()) if secret is not None else []
    return _out(await service.record(session, keys, token, body, now=clock.now()))


@router.get(
    "/v1/conversations/{conversation_id}/csat",
    response_model=CsatList,
    responses=problems(401, 404),
)
async def list_conversation_ratings(
    conversation_id: str, session: Session, caller: CurrentCaller
) -> CsatList:
    """The conversation's ratings, one per rated resolution cycle."""
    ratings = await service.ratings_of(session, caller, conversation_id)
    return CsatList(items=[_out(r) for r in ratings])
