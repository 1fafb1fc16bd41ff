# Two images from one file (docker-compose.yml builds both):
#   docker build -t overfit-advisor .                          # the API (the last stage: `api`)
#   docker build --target worker -t overfit-advisor-worker .   # a GPU verification worker
# The API binds 0.0.0.0, so auth is required: create a project token with
#   docker run --rm -v advisor-data:/data overfit-advisor advisor project create NAME
# tests/test_deploy.py checks this file against the CLI, the settings and pyproject.toml.

FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ADVISOR_DATABASE_URL=sqlite:////data/advisor.db

# A numeric uid and gid, so an orchestrator can check "not root" without reading /etc/passwd.
RUN groupadd --gid 10001 advisor \
    && useradd --create-home --uid 10001 --gid 10001 advisor \
    && mkdir /data && chown advisor:advisor /data
WORKDIR /app
VOLUME ["/data"]

# torch is installed in each target before the package, never in the shared base: `pip install
# -e .` alone would pull PyPI's CUDA build (several GB) into the API image too, and a CPU wheel
# installed after it would be "already satisfied". Keeping torch ahead of `COPY app` also keeps
# that layer cached while the code changes.


# Verification worker. PyPI's linux x86_64 torch wheels are the CUDA builds (CUDA 13.0 for 2.14.1)
# and carry CUDA's user-space libraries as cuda-toolkit/nvidia-* wheels, so python:3.11-slim is
# enough: the host provides only a driver that runs CUDA 13 and the NVIDIA Container Toolkit. An
# nvidia/cuda base would ship a second copy of those libraries, and no Python 3.11.
FROM base AS worker

RUN pip install torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
# Editable, so the Alembic revisions in /app/migrations are found next to the package; the
# package's dependencies bring scikit-learn and numpy (the bundled digits data).
RUN pip install -e .

USER 10001:10001
# --device cuda, not auto: a container started without its GPU fails its jobs with the reason
# instead of training on the CPU unnoticed. SIGTERM hands the running job back.
CMD ["advisor", "worker", "--device", "cuda"]


# The API (the default target). It imports torch only for the embedded worker, which the
# compose file turns off; the CPU wheels keep the image gigabytes smaller (no CUDA libraries)
# and still let a single `docker run` verify on the CPU. Their local version (2.14.1+cpu)
# satisfies pyproject's torch==2.14.1, so `pip install -e .` keeps them.
FROM base AS api

RUN pip install --index-url https://download.pytorch.org/whl/cpu \
    torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install -e .

ENV ADVISOR_HOST=0.0.0.0 \
    ADVISOR_PORT=8000
USER 10001:10001
EXPOSE 8000
# Shell form so the probe follows ADVISOR_PORT; a 503 from /readyz raises, and that exits non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ADVISOR_PORT', '8000') + '/readyz', timeout=4)"
CMD ["advisor", "serve"]
