"""``/api/interests``: the catalogue of interest tags a profile picks from."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentUser, SessionDep
from api.schemas.profiles import InterestList, InterestOut
from api.services import profiles

router = APIRouter(prefix="/api/interests", tags=["profiles"])


@router.get("", response_model=InterestList)
async def list_interests(_: CurrentUser, session: SessionDep) -> InterestList:
    """Every interest tag a profile can choose, by slug."""
    rows = await profiles.catalogue(session)
    return InterestList(interests=[InterestOut(slug=i.slug, label=i.label) for i in rows])
