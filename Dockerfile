# syntax=docker/dockerfile:1
# Builder: compile the Cython engine into a wheel.
FROM python:3.11-slim AS builder
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime: no compilers, non-root, tini as init.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends tini curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 kato
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER kato
WORKDIR /home/kato
ENV KATO_HOST=0.0.0.0 KATO_PORT=8000 KATO_DATA_DIR=/home/kato/data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["kato", "serve"]
