"""Who may see whom: the block rule that every surface of the API applies the same way.

A block is symmetric and total: if either user blocked the other, each is invisible to the other
(404 on profiles, absent from discovery, matches, likes, conversations). Every route asks here
rather than querying the ``blocks`` table itself.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from common.models import Block


def blocked_between(
    a: int | ColumnElement[int], b: int | ColumnElement[int]
) -> ColumnElement[bool]:
    """A SQL condition: true when ``a`` blocked ``b`` or ``b`` blocked ``a``.

    Either side may be a column, so queries can filter whole result sets in SQL:
    ``.where(~blocked_between(viewer_id, Profile.user_id))``.
    """
    return exists(
        select(Block.blocker_id).where(
            or_(
                and_(Block.blocker_id == a, Block.blocked_id == b),
                and_(Block.blocker_id == b, Block.blocked_id == a),
            )
        )
    )


async def is_blocked_between(session: AsyncSession, a: int, b: int) -> bool:
    return bool(await session.scalar(select(blocked_between(a, b))))
