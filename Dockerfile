# syntax=docker/dockerfile:1
# KATO service image. Build: `docker build -t kato:latest .` (or kato-manager.sh build).

# ---- builder: compile the Cython engine, wheel everything the runtime installs.
FROM python:3.11-slim AS builder
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- runtime: no compilers, non-root, tini as init (signals reach uvicorn, zombies are reaped).
FROM python:3.11-slim
LABEL org.opencontainers.image.title="kato" \
      org.opencontainers.image.description="KATO: deterministic sequence learning and prediction service" \
      org.opencontainers.image.licenses="MIT"
RUN apt-get update && apt-get install -y --no-install-recommends tini curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 kato \
    && mkdir -p /home/kato/data && chown kato:kato /home/kato/data
# Only the wheels built above: the runtime stage needs no compiler and no index.
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels kato-engine && rm -rf /wheels
USER kato
WORKDIR /home/kato
# The data dir exists and belongs to kato, so a fresh named volume mounted there is writable.
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    KATO_HOST=0.0.0.0 KATO_PORT=8000 KATO_DATA_DIR=/home/kato/data
EXPOSE 8000
# /health is exempt from KATO_API_KEY, so the probe needs no secret.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["kato", "serve"]
