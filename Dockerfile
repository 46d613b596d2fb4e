# Multi-stage build: one builder, one small runtime image per binary.
#   docker build --target api -t paperhook-api .
#   docker build --target worker -t paperhook-worker .
#   docker build --target janitor -t paperhook-janitor .
#   docker build --target cli -t paperhook-cli .      (the `paperhook` client)
FROM rust:1.95-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev pkg-config libtesseract-dev libleptonica-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out && cp target/release/paperhook-api target/release/paperhook-worker target/release/paperhook-janitor target/release/paperhook /out/

FROM debian:bookworm-slim AS runtime-base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/paperhook --create-home paperhook
USER paperhook
WORKDIR /var/lib/paperhook
ENV PAPERHOOK_LOG_FORMAT=json

# Tesseract's library and language data: the worker extracts, and the API
# links the same extraction code for template previews (/v1/preview/*).
FROM runtime-base AS ocr-runtime
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu tesseract-ocr-fra \
 && rm -rf /var/lib/apt/lists/*
USER paperhook
ENV OMP_THREAD_LIMIT=1

FROM ocr-runtime AS api
COPY --from=builder /out/paperhook-api /usr/local/bin/
ENV PAPERHOOK_API_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["paperhook-api"]
CMD ["serve"]

FROM runtime-base AS cli
COPY --from=builder /out/paperhook /usr/local/bin/
ENTRYPOINT ["paperhook"]

FROM runtime-base AS janitor
COPY --from=builder /out/paperhook-janitor /usr/local/bin/
ENTRYPOINT ["paperhook-janitor"]

FROM ocr-runtime AS worker
COPY --from=builder /out/paperhook-worker /usr/local/bin/
ENTRYPOINT ["paperhook-worker"]
