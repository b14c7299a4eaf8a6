"""The discovery benchmark's population: profiles with PostGIS points over a city and a region.

Owns placing ``count`` complete profiles the way a dating app's users are spread: most of them
in one city (a normal spread around its centre, ``CITY_SIGMA_KM``), the rest thinly over a wide
region around it (uniform in a square of ``REGION_HALF_KM``). Every point is snapped to its
~1 km cell centre as the API stores it (:func:`common.geo.snap`). Each profile gets a gender,
an age, both-way preferences, a few interests, usually a photo row, a trust score and a recent
activity time, all from one seeded ``random.Random`` so that a run is reproducible. Rows go in
with one ``INSERT ... SELECT FROM unnest(...)`` per table (20,000 profiles take seconds), then
``ANALYZE`` so the planner sees them. The searchers (the accounts that sign in over the API)
are placed by hand (:data:`SEARCHERS`) and given a real password hash.

It must not talk to the API: :mod:`loadtest.discovery` does.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import secrets
from dataclasses import dataclass
from typing import Final

import asyncpg

from api.seed import INTERESTS
from api.services.passwords import hash_password
from common.geo import snap

#: The city (Paris, like the demo users) and the spread of its users.
CITY: Final = (48.8566, 2.3522)
CITY_SIGMA_KM: Final = 12.0
#: The share of profiles in the city; the rest are spread over the region.
CITY_SHARE: Final = 0.75
#: Half the side of the square region around the city, in km.
REGION_HALF_KM: Final = 300.0
KM_PER_DEG_LAT: Final = 111.32
GENDERS: Final = ("woman", "man", "nonbinary")
GENDER_WEIGHTS: Final = (0.48, 0.48, 0.04)
SEARCHER_PASSWORD: Final = "discovery-bench-1"  # noqa: S105 (bench accounts on a bench database)


@dataclass(frozen=True, slots=True)
class Searcher:
    """One account that signs in and discovers: where it stands and how far it looks."""

    name: str
    #: Offset from the city centre in km (east, north).
    east_km: float
    north_km: float
    radius_km: int
    gender: str
    wants: tuple[str, ...]


#: From the dense centre to a town in the thin region: the radius decides how selective the
#: GiST condition is, so each searcher shows a different side of the plan.
SEARCHERS: Final = (
    Searcher("centre-10km", 0.0, 0.0, 10, "woman", ("man",)),
    Searcher("suburb-25km", 15.0, -8.0, 25, "man", ("woman",)),
    Searcher("centre-50km", 2.0, 3.0, 50, "woman", ("man", "woman")),
    Searcher("town-100km", -180.0, 120.0, 100, "man", ("woman",)),
)


@dataclass(frozen=True, slots=True)
class Population:
    profiles: int
    #: Searcher user ids, emails and their shared password, in :data:`SEARCHERS` order.
    searcher_ids: tuple[int, ...]
    searcher_emails: tuple[str, ...]
    password: str


def offset(east_km: float, north_km: float) -> tuple[float, float]:
    """The point ``east_km``/``north_km`` from the city centre, snapped to its cell."""
    lat = CITY[0] + north_km / KM_PER_DEG_LAT
    lon = CITY[1] + east_km / (KM_PER_DEG_LAT * math.cos(math.radians(lat)))
    return snap(lat, lon)


def spread_points(rng: random.Random, count: int) -> list[tuple[float, float]]:
    """``count`` snapped (lat, lon): ``CITY_SHARE`` around the centre, the rest over the region."""
    points = []
    for _ in range(count):
        if rng.random() < CITY_SHARE:
            east, north = rng.gauss(0.0, CITY_SIGMA_KM), rng.gauss(0.0, CITY_SIGMA_KM)
        else:
            east = rng.uniform(-REGION_HALF_KM, REGION_HALF_KM)
            north = rng.uniform(-REGION_HALF_KM, REGION_HALF_KM)
        points.append(offset(east, north))
    return points


def _wants(rng: random.Random, gender: str) -> list[str]:
    if gender == "nonbinary" or rng.random() < 0.1:
        return list(GENDERS)
    return ["man"] if gender == "woman" else ["woman"]


async def _interest_ids(con: asyncpg.Connection) -> list[int]:
    await con.execute(
        "INSERT INTO interests (slug, label) SELECT s, initcap(replace(s, '-', ' '))"
        " FROM unnest($1::text[]) s ON CONFLICT DO NOTHING",
        list(INTERESTS),
    )
    return [int(r[0]) for r in await con.fetch("SELECT id FROM interests ORDER BY id")]


async def seed(dsn: str, count: int, *, seed: int = 20) -> Population:
    """``count`` complete profiles (searchers included) in one transaction, then ``ANALYZE``."""
    rng = random.Random(seed)
    tag = secrets.token_hex(4)
    total = max(count, len(SEARCHERS))
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    emails = [f"disc-{tag}-{i}@example.test" for i in range(total)]
    hashes = ["load-test"] * total
    hashes[: len(SEARCHERS)] = [hash_password(SEARCHER_PASSWORD)] * len(SEARCHERS)
    points = [offset(s.east_km, s.north_km) for s in SEARCHERS]
    points += spread_points(rng, total - len(SEARCHERS))
    genders = [s.gender for s in SEARCHERS] + rng.choices(
        GENDERS, GENDER_WEIGHTS, k=total - len(SEARCHERS)
    )
    wants = [list(s.wants) for s in SEARCHERS] + [_wants(rng, g) for g in genders[len(SEARCHERS) :]]
    radius = [s.radius_km for s in SEARCHERS] + [
        rng.choice((10, 25, 50, 100)) for _ in genders[len(SEARCHERS) :]
    ]
    ages = [30] * len(SEARCHERS) + [
        min(60, 18 + int(rng.expovariate(1 / 10))) for _ in genders[len(SEARCHERS) :]
    ]
    con = await asyncpg.connect(dsn)
    try:
        async with con.transaction():
            interests = await _interest_ids(con)
            ids = [
                int(r[0])
                for r in await con.fetch(
                    "INSERT INTO users (email, password_hash, email_verified_at, trust_score,"
                    " last_active_at) SELECT * FROM unnest($1::text[], $2::text[],"
                    " $3::timestamptz[], $4::smallint[], $5::timestamptz[]) RETURNING id",
                    emails,
                    hashes,
                    [now] * total,
                    [rng.randint(30, 80) for _ in range(total)],
                    [now - dt.timedelta(hours=rng.expovariate(1 / 72)) for _ in range(total)],
                )
            ]
            await con.execute(
                "INSERT INTO profiles (user_id, display_name, birth_date, gender, bio, location,"
                " location_updated_at, pref_age_min, pref_age_max, pref_max_distance_km,"
                " pref_genders, is_complete)"
                " SELECT u, 'Bench ' || u, b, g, bio,"
                " ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography, $9, a_min, a_max, r,"
                " string_to_array(w, ','), true"
                " FROM unnest($1::bigint[], $2::date[], $3::text[], $4::text[], $5::float8[],"
                " $6::float8[], $7::smallint[], $8::smallint[], $10::smallint[], $11::text[])"
                " AS t(u, b, g, bio, lat, lon, a_min, a_max, r, w)",
                ids,
                [today - dt.timedelta(days=int(365.25 * a) + rng.randint(0, 300)) for a in ages],
                genders,
                ["" if rng.random() < 0.3 else "Coffee, trains and long walks." for _ in ids],
                [p[0] for p in points],
                [p[1] for p in points],
                [max(18, a - 5 - rng.randint(0, 5)) for a in ages],
                [min(99, a + 5 + rng.randint(0, 10)) for a in ages],
                now,
                radius,
                [",".join(w) for w in wants],
            )
            picks = [(u, i) for u in ids for i in rng.sample(interests, rng.randint(2, 6))]
            await con.execute(
                "INSERT INTO user_interests (user_id, interest_id)"
                " SELECT * FROM unnest($1::bigint[], $2::int[])",
                [u for u, _ in picks],
                [i for _, i in picks],
            )
            with_photo = [u for u in ids if rng.random() < 0.85]
            await con.execute(
                "INSERT INTO photos (user_id, storage_key, thumb_key, content_type, width,"
                " height, position, is_primary)"
                " SELECT u, $2 || u, $3 || u, 'image/jpeg', 1080, 1350, 0, true"
                " FROM unnest($1::bigint[]) u",
                with_photo,
                f"bench{tag}p",
                f"bench{tag}t",
            )
        await con.execute("ANALYZE users, profiles, user_interests, photos")
    finally:
        await con.close()
    return Population(
        profiles=total,
        searcher_ids=tuple(ids[: len(SEARCHERS)]),
        searcher_emails=tuple(emails[: len(SEARCHERS)]),
        password=SEARCHER_PASSWORD,
    )
