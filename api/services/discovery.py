"""Discovery: whom a viewer may see nearby, filtered and ranked in one SQL query, keyset-paged.

Owns the candidate query, the distance buckets and the ranking score. Location privacy (see
docs and RELIABILITY.md): profiles store only the centre of a ~1 km cell, distances are
measured between cell centres and shown as buckets, the radius filter is rounded up to a bucket
edge, and the ranking uses the bucket, never the exact distance. So the output changes only
when the bucket does, and two people in one cell are indistinguishable. Activity recency enters
the score in whole days, so the order does not reveal a precise last-seen time either.

Must not: compute distances in Python, order by exact distance, or issue a query per row. The
radius test is a bounding-box overlap (``&&``) with the bound point expanded by the radius,
an index condition on ``ix_profiles_location`` (GiST), then the same sphere distance the buckets
use; :func:`explain` shows the plan. Not ``ST_DWithin``: PostGIS estimates its rows at 1 or 2
whatever the radius, and on that estimate PostgreSQL's custom plans joined ``users`` by a
sequential scan per candidate (seconds for a 25-50 km city search; ``docs/BENCHMARKS.md``,
*Discovery latency*). The ``&&`` test is estimated from the column's statistics.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    ScalarSelect,
    Select,
    and_,
    any_,
    case,
    cast,
    exists,
    extract,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.expression import Executable

from api.errors import Conflict
from api.schemas.discovery import (
    DISCOVERY_PAGE_DEFAULT,
    Candidate,
    DiscoveryPage,
    decode_cursor,
    encode_cursor,
)
from api.services.relations import blocked_between
from common.models import Match, Photo, Profile, Swipe, User, UserInterest
from common.settings import Settings

#: Upper edges of the distance buckets, in km. The radius filter is rounded up to one of them.
DISTANCE_EDGES_KM: Final = (2, 5, 10, 25, 50, 100, 250, 500)
#: Days of inactivity after which activity adds nothing to the score.
ACTIVITY_HORIZON_DAYS: Final = 30
#: The score is kept as an integer number of hundredths of a point (0–10000): exact keysets.
SCORE_SCALE: Final = 100


def bucket_label(index: int) -> str:
    """The text shown for bucket ``index`` (0 is the nearest)."""
    if index <= 0:
        return f"<{DISTANCE_EDGES_KM[0]} km"
    if index >= len(DISTANCE_EDGES_KM):
        return f">{DISTANCE_EDGES_KM[-1]} km"
    return f"{DISTANCE_EDGES_KM[index - 1]}–{DISTANCE_EDGES_KM[index]} km"


def bucket_of(distance_km: float) -> int:
    """The bucket of a distance between cell centres (Python twin of the SQL ``CASE``)."""
    return bisect.bisect_right(DISTANCE_EDGES_KM, distance_km)


def quantized_radius_km(max_distance_km: int) -> int:
    """The viewer's radius rounded up to a bucket edge: filtering moves only at bucket edges."""
    index = bisect.bisect_left(DISTANCE_EDGES_KM, max_distance_km)
    return DISTANCE_EDGES_KM[min(index, len(DISTANCE_EDGES_KM) - 1)]


@dataclass(frozen=True, slots=True)
class Viewer:
    user_id: int
    gender: str
    wants: tuple[str, ...]
    age: int
    age_min: int
    age_max: int
    radius_km: int
    point_wkt: str
    interests: tuple[int, ...]


def age_years(birth_date: Any) -> ColumnElement[int]:
    """Whole years of age today, in SQL."""
    return cast(extract("year", func.age(func.current_date(), birth_date)), Integer)


def born_for_ages(birth_date: Any, youngest: int, oldest: int) -> ColumnElement[bool]:
    """``age_years(birth_date)`` between ``youngest`` and ``oldest``, as a range of birth dates.

    The same people as the age test, but the planner estimates a range of a column from its
    statistics, where it gives an expression's range a fixed 0.5 % (which, multiplied into the
    other filters, made it expect one candidate and pick a nested loop that scans ``users`` per
    candidate).
    """
    return and_(
        birth_date <= func.current_date() - func.make_interval(youngest),
        birth_date > func.current_date() - func.make_interval(oldest + 1),
    )


def primary_thumb(user_id: Any) -> ScalarSelect[str]:
    """The thumb key of ``user_id``'s primary photo (else its first), as a scalar subquery."""
    return (
        select(Photo.thumb_key)
        .where(Photo.user_id == user_id)
        .order_by(Photo.is_primary.desc(), Photo.position, Photo.id)
        .limit(1)
        .scalar_subquery()
    )


async def load_viewer(session: AsyncSession, user_id: int) -> Viewer:
    """The viewer's own preferences and cell; a profile without a location cannot discover."""
    interests = (
        select(func.array_agg(UserInterest.interest_id))
        .where(UserInterest.user_id == Profile.user_id)
        .scalar_subquery()
    )
    row = (
        await session.execute(
            select(
                Profile.gender,
                Profile.pref_genders,
                age_years(Profile.birth_date),
                Profile.pref_age_min,
                Profile.pref_age_max,
                Profile.pref_max_distance_km,
                func.ST_AsText(Profile.location),
                interests,
            ).where(
                Profile.user_id == user_id,
                Profile.is_complete.is_(True),
                Profile.location.is_not(None),
            )
        )
    ).first()
    if row is None:
        raise Conflict("complete your profile and set a location first", code="profile_incomplete")
    gender, wants, age, age_min, age_max, max_km, wkt, interest_ids = row
    return Viewer(
        user_id=user_id,
        gender=gender,
        wants=tuple(wants),
        age=int(age),
        age_min=age_min,
        age_max=age_max,
        radius_km=quantized_radius_km(max_km),
        point_wkt=str(wkt),
        interests=tuple(interest_ids or ()),
    )


def candidates_query(
    viewer: Viewer,
    settings: Settings,
    *,
    as_of: dt.datetime,
    after: tuple[int, int] | None,
    limit: int,
) -> Select[Any]:
    """The whole discovery page as one statement: filters, both-way preferences, score, keyset.

    Three stages. ``near`` (a materialized CTE) applies every filter, the radius through the
    GiST index, and computes each candidate's distance and shared interests once (PostgreSQL
    does not share repeated expressions, and a spheroid distance is the costly part). ``ranked``
    turns them into a bucket and an integer score and cuts the keyset page. The outer query
    adds the photo for the page's rows only.

    ``as_of`` is the first page's time, carried in the cursor so that every page scores
    activity against the same instant; ``after`` is the (score, user id) of the last row seen.
    """
    viewer_id = viewer.user_id
    point = func.ST_GeogFromText(literal(viewer.point_wkt))
    age = age_years(Profile.birth_date)
    radius_m = float(viewer.radius_km * 1000)
    # On the sphere, not the spheroid: ~0.3% apart, far below a bucket, and much cheaper.
    distance_m = func.ST_Distance(Profile.location, point, False)
    # The viewer's interests travel as a parameter: each candidate costs one index-only probe.
    shared = (
        select(func.count())
        .select_from(UserInterest)
        .where(
            UserInterest.user_id == Profile.user_id,
            UserInterest.interest_id.in_(viewer.interests),
        )
        .scalar_subquery()
        if viewer.interests
        else literal(0)
    )
    has_photo = exists().where(Photo.user_id == Profile.user_id)
    has_interests = exists().where(UserInterest.user_id == Profile.user_id)
    # Liked ever, or passed within the cooldown: not shown again.
    swiped = exists().where(
        Swipe.swiper_id == viewer_id,
        Swipe.target_id == Profile.user_id,
        or_(
            Swipe.kind == "like",
            Swipe.created_at > func.now() - dt.timedelta(seconds=settings.pass_cooldown_s),
        ),
    )
    # Any match, live or unmatched: an unmatched pair never sees each other again.
    matched = exists().where(
        Match.user_low_id == func.least(viewer_id, Profile.user_id),
        Match.user_high_id == func.greatest(viewer_id, Profile.user_id),
    )
    near = (
        select(
            Profile.user_id.label("user_id"),
            Profile.display_name.label("display_name"),
            age.label("age"),
            Profile.gender.label("gender"),
            Profile.bio.label("bio"),
            distance_m.label("distance_m"),
            shared.label("shared"),
            (
                cast(Profile.bio != "", Integer)
                + cast(has_photo, Integer)
                + cast(has_interests, Integer)
            ).label("filled"),
            User.trust_score.label("trust"),
            User.last_active_at.label("active_at"),
        )
        .join(User, User.id == Profile.user_id)
        .where(
            Profile.location.op("&&")(func._ST_Expand(point, radius_m)),
            distance_m <= radius_m,
            Profile.user_id != viewer_id,
            Profile.is_complete.is_(True),
            User.is_active.is_(True),
            User.deleted_at.is_(None),
            or_(User.banned_until.is_(None), User.banned_until <= func.now()),
            # Preferences both ways: each wants the other's gender and age.
            Profile.gender.in_(viewer.wants),
            any_(Profile.pref_genders) == viewer.gender,
            born_for_ages(Profile.birth_date, viewer.age_min, viewer.age_max),
            literal(viewer.age).between(Profile.pref_age_min, Profile.pref_age_max),
            ~swiped,
            ~matched,
            ~blocked_between(viewer_id, Profile.user_id.expression),
        )
        .cte("near")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )

    bucket = case(
        *((near.c.distance_m < edge * 1000, index) for index, edge in enumerate(DISTANCE_EDGES_KM)),
        else_=len(DISTANCE_EDGES_KM),
    )
    idle_days = func.greatest(
        0, func.floor(extract("epoch", literal(as_of) - near.c.active_at) / 86400)
    )
    components = (
        (
            settings.rank_weight_interests,
            func.least(cast(near.c.shared, Float) / max(len(viewer.interests), 1), 1.0),
        ),
        (settings.rank_weight_distance, 1.0 - cast(bucket, Float) / len(DISTANCE_EDGES_KM)),
        (
            settings.rank_weight_activity,
            func.greatest(0.0, 1.0 - cast(idle_days, Float) / ACTIVITY_HORIZON_DAYS),
        ),
        (settings.rank_weight_completeness, cast(near.c.filled, Float) / 3.0),
        (settings.rank_weight_trust, cast(near.c.trust, Float) / 100.0),
    )
    weighted = sum((weight * component for weight, component in components), literal(0.0))
    score = cast(func.round(weighted * SCORE_SCALE), Integer)
    ranked = select(
        near.c.user_id,
        near.c.display_name,
        near.c.age,
        near.c.gender,
        near.c.bio,
        near.c.shared,
        bucket.label("bucket"),
        score.label("score"),
    ).subquery("ranked")
    # The radius test keeps distance <= radius; the bucket test drops a point exactly on the edge,
    # which would otherwise show the next bucket's label.
    radius_bucket = DISTANCE_EDGES_KM.index(viewer.radius_km)
    page = (
        select(ranked)
        .where(ranked.c.bucket <= radius_bucket)
        .order_by(ranked.c.score.desc(), ranked.c.user_id)
        .limit(limit + 1)
    )
    if after is not None:
        last_score, last_id = after
        page = page.where(
            or_(
                ranked.c.score < last_score,
                and_(ranked.c.score == last_score, ranked.c.user_id > last_id),
            )
        )
    rows = page.subquery("page")
    return select(rows, primary_thumb(rows.c.user_id).label("thumb")).order_by(
        rows.c.score.desc(), rows.c.user_id
    )


def _parse_cursor(
    cursor: str | None, now: dt.datetime
) -> tuple[dt.datetime, tuple[int, int] | None]:
    if cursor is None:
        return now, None
    as_of_ms, score, user_id = decode_cursor(cursor, (int, int, int))
    assert isinstance(as_of_ms, int) and isinstance(score, int) and isinstance(user_id, int)
    # A cursor from the future would only shift the caller's own scores; clamp it anyway.
    as_of = min(dt.datetime.fromtimestamp(as_of_ms / 1000, dt.UTC), now)
    return as_of, (score, user_id)


async def discover(
    session: AsyncSession,
    settings: Settings,
    *,
    viewer_id: int,
    cursor: str | None,
    limit: int,
) -> DiscoveryPage:
    """One page of candidates for ``viewer_id``, best first: two queries, whatever the size."""
    viewer = await load_viewer(session, viewer_id)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    as_of, after = _parse_cursor(cursor, now)
    rows = (
        await session.execute(
            candidates_query(viewer, settings, as_of=as_of, after=after, limit=limit)
        )
    ).all()
    items = [
        Candidate(
            user_id=row.user_id,
            display_name=row.display_name,
            age=row.age,
            gender=row.gender,
            bio=row.bio,
            distance=bucket_label(row.bucket),
            shared_interests=row.shared,
            photo_thumb=row.thumb,
        )
        for row in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([int(as_of.timestamp() * 1000), last.score, last.user_id])
    return DiscoveryPage(items=items, next_cursor=next_cursor)


#: What :class:`Explain` may ask for besides the plan (``ANALYZE`` runs the statement).
ExplainOption = Literal["ANALYZE", "BUFFERS"]


class Explain(Executable, ClauseElement):
    """``EXPLAIN [(options)] <statement>`` with the statement's own bound parameters."""

    inherit_cache = False

    def __init__(self, statement: Select[Any], options: tuple[ExplainOption, ...] = ()) -> None:
        self.statement = statement
        self.explain_options = options


def _compile_explain(element: Explain, compiler: Any, **kw: Any) -> str:
    options = f"({', '.join(element.explain_options)}) " if element.explain_options else ""
    return f"EXPLAIN {options}" + str(compiler.process(element.statement, **kw))


def _register_explain() -> None:
    from sqlalchemy.ext.compiler import compiles

    compiles(Explain)(_compile_explain)


_register_explain()


async def explain(
    session: AsyncSession,
    settings: Settings,
    *,
    viewer_id: int,
    options: tuple[ExplainOption, ...] = (),
) -> list[str]:
    """The plan of ``viewer_id``'s first discovery page (the route's default size), by line.

    With ``options=("ANALYZE", "BUFFERS")`` the statement runs, and the plan shows actual rows,
    times and buffers (the discovery benchmark reports them).
    """
    viewer = await load_viewer(session, viewer_id)
    statement = candidates_query(
        viewer, settings, as_of=dt.datetime.now(dt.UTC), after=None, limit=DISCOVERY_PAGE_DEFAULT
    )
    result = await session.execute(Explain(statement, options))
    return [str(line) for line in result.scalars()]
