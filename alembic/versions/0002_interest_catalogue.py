"""Data: the interest catalogue, so every database (production too) has it without ``api.seed``.

The list is a frozen copy on purpose: a migration must do the same thing forever, whatever the
application's code says later. Tags added later get a migration of their own; ``api.seed`` may
carry them in development meanwhile (its inserts skip what exists, as this one does).

Revision ID: 0002_interest_catalogue
Revises: 0001
Create Date: 2026-11-28 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from alembic import op

revision: str = "0002_interest_catalogue"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TAGS = (
    "hiking cooking travel music movies reading running yoga photography gaming art dancing"
    " coffee wine climbing cycling swimming board-games theatre concerts dogs cats gardening"
    " volunteering languages tech fashion fitness meditation football"
)
#: A compact frozen list (not a line per tag).
CATALOGUE = _TAGS.split()

_interests = sa.table(
    "interests",
    sa.column("slug", sa.String(40)),
    sa.column("label", sa.String(60)),
)


def label_of(slug: str) -> str:
    return slug.replace("-", " ").title()


def upgrade() -> None:
    rows = [{"slug": slug, "label": label_of(slug)} for slug in CATALOGUE]
    op.execute(insert(_interests).values(rows).on_conflict_do_nothing(index_elements=["slug"]))


def downgrade() -> None:
    # Users' choices of these tags go with them (user_interests cascades).
    op.execute(sa.delete(_interests).where(_interests.c.slug.in_(CATALOGUE)))
