"""/api/v1/ladder: the rungs, their order and what each changes."""

from fastapi import APIRouter

from app.advisor.ladder import RUNGS
from app.api.errors import errors
from app.schemas import RungOut

router = APIRouter(tags=["ladder"])


def ladder_rungs() -> list[RungOut]:
    return [
        RungOut(
            id=r.id.value,
            order=i,
            title=r.title,
            remedy=r.remedy,
            changes=r.changes,
            levels=list(r.levels),
        )
        for i, r in enumerate(RUNGS, start=1)
    ]


@router.get("/ladder", response_model=list[RungOut], responses=errors(500))
def get_ladder() -> list[RungOut]:
    return ladder_rungs()
