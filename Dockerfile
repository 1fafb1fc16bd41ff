# The API service. Binding 0.0.0.0 makes auth required: create a project token with
#   docker run --rm -v advisor-data:/data IMAGE advisor project create NAME
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ADVISOR_HOST=0.0.0.0 \
    ADVISOR_PORT=8000 \
    ADVISOR_DATABASE_URL=sqlite:////data/advisor.db

RUN useradd --create-home --uid 10001 advisor && mkdir /data && chown advisor /data
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
# Editable: the Alembic revisions in /app/migrations are found next to the package.
RUN pip install -e .

USER advisor
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"
CMD ["advisor", "serve"]
