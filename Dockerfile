# One image for both services and the migrate step; docker-compose.yml picks the command.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MM_DATA_DIR=/var/lib/mergemeet

WORKDIR /app
COPY pyproject.toml README.md ./
COPY common ./common
COPY api ./api
COPY realtime ./realtime
COPY loadtest ./loadtest
COPY alembic ./alembic
COPY alembic.ini ./
RUN pip install . \
    && useradd --system --home-dir /var/lib/mergemeet --create-home mergemeet
USER mergemeet

EXPOSE 8000 8765
CMD ["python", "-m", "api"]
