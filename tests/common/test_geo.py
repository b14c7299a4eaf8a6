"""The coarse location grid: pure logic, no services."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.geo import snap


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(h))


latitudes = st.floats(min_value=-80, max_value=80, allow_nan=False)
longitudes = st.floats(min_value=-179.9, max_value=179.9, allow_nan=False)


@given(latitudes, longitudes)
def test_snap_is_idempotent_and_close(lat: float, lon: float) -> None:
    cell = snap(lat, lon)
    assert snap(*cell) == cell
    assert _km((lat, lon), cell) < 1.0  # half-diagonal of a ~1.1 km cell


def test_two_points_in_one_cell_are_indistinguishable() -> None:
    assert snap(48.85601, 2.35201) == snap(48.85899, 2.35799)


def test_neighbouring_cells_are_about_one_km_apart() -> None:
    a = snap(48.8555, 2.3522)
    b = snap(48.8655, 2.3522)
    assert a[0] == pytest.approx(b[0] - 0.01)  # adjacent bands
    # Columns of adjacent bands are offset (their width follows cos(latitude)).
    assert 1.0 < _km(a, b) < 1.5


@pytest.mark.parametrize(("lat", "lon"), [(91, 0), (-91, 0), (0, 181), (0, -180.5)])
def test_out_of_range_coordinates_are_refused(lat: float, lon: float) -> None:
    with pytest.raises(ValueError, match="latitude"):
        snap(lat, lon)
