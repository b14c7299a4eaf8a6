"""Newest-first keyset pages by id: the one way the API pages its append-only lists.

``newest_first`` asks for one row more than the page so that ``next_cursor`` can tell whether
another page exists without a count query. The cursor codec is ``api.schemas.discovery``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select

from api.schemas.discovery import decode_cursor, encode_cursor


def newest_first(query: Select[Any], id_column: Any, cursor: str | None, limit: int) -> Select[Any]:
    """``query`` ordered by ``id_column`` descending, after ``cursor``, one row past the page."""
    if cursor is not None:
        (before,) = decode_cursor(cursor, [int])
        query = query.where(id_column < before)
    return query.order_by(id_column.desc()).limit(limit + 1)


def next_cursor(ids: Sequence[int], limit: int) -> str | None:
    """The cursor of the page after this one, given the ids ``newest_first`` returned."""
    return encode_cursor([ids[limit - 1]]) if len(ids) > limit else None
