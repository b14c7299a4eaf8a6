"""Location privacy: every stored or compared position is the centre of a ~1.1 km cell.

Latitude is cut into bands of ``CELL_DEG`` degrees; each band into cells of ``CELL_DEG /
cos(latitude)`` degrees of longitude, so cells are roughly square everywhere. Two people in the
same cell are indistinguishable in every output, and no per-query noise is added (noise averages
out under repeated queries; a fixed grid does not).
"""

from __future__ import annotations

import math
from typing import Final

CELL_DEG: Final = 0.01  # ~1.11 km of latitude
_MAX_LAT_BAND: Final = 89.0


def snap(lat: float, lon: float) -> tuple[float, float]:
    """The centre of the cell holding (``lat``, ``lon``); both in degrees, WGS 84."""
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError("latitude must be in [-90, 90] and longitude in [-180, 180]")
    band = math.floor(lat / CELL_DEG)
    centre_lat = (band + 0.5) * CELL_DEG
    centre_lat = max(-_MAX_LAT_BAND, min(_MAX_LAT_BAND, centre_lat))
    lon_step = CELL_DEG / math.cos(math.radians(centre_lat))
    column = math.floor((lon + 180.0) / lon_step)
    centre_lon = -180.0 + (column + 0.5) * lon_step
    if centre_lon > 180.0:
        centre_lon -= 360.0
    return round(centre_lat, 6), round(centre_lon, 6)


def ewkt(lat: float, lon: float) -> str:
    """The snapped point as EWKT for a ``geography(Point, 4326)`` column."""
    cell_lat, cell_lon = snap(lat, lon)
    return f"SRID=4326;POINT({cell_lon} {cell_lat})"
