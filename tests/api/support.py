"""Helpers of the API tests: the users that ``user_factory`` (``tests/api/conftest.py``) makes.

Those users are made straight in the database with :data:`TEST_PASSWORD` and a signed access
token, so a test owns fresh users and never depends on another's data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

TEST_PASSWORD = "correct horse battery staple"


@dataclass(frozen=True, slots=True)
class TestUser:
    __test__ = False  # not a test class

    id: int
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


UserFactory = Callable[..., Awaitable[TestUser]]
