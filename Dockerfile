# One image for every tracker service (migrate, worker, beat): built from pyproject.toml,
# runtime dependencies only, running as an unprivileged user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY models ./models
COPY migrations ./migrations
COPY worker ./worker
RUN pip install '.[server,flower]' \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin tracker

USER tracker
CMD ["pixverse-tracker", "worker"]
