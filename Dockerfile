# One image for the API and the worker. Build: docker build -t tunecost .
# GPU hosts: the same torch pin resolves to the CUDA build there (run with --gpus all).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TUNECOST_STORAGE_ROOT=/data/storage \
    TUNECOST_MODEL_ROOTS=/models

WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*

# torch first, pinned (see Makefile): its layer is cached apart from our code. Then the locked
# runtime packages (requirements/main.txt, no test tools), then the project itself.
RUN pip install "torch==2.13.0"
COPY requirements/main.txt ./requirements/
RUN pip install -r requirements/main.txt
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
COPY devtools ./devtools
RUN pip install .
COPY alembic.ini ./
COPY migrations ./migrations

RUN useradd --create-home --uid 1000 tunecost && mkdir -p /data/storage /models \
    && chown -R tunecost /data /models
USER tunecost

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --retries=5 \
    CMD curl -fsS http://127.0.0.1:8000/v1/health || exit 1
CMD ["sh", "-c", "tunecost bootstrap && uvicorn app.main:create_app --factory --host 0.0.0.0 --port 8000 --timeout-graceful-shutdown 30 --no-server-header"]
