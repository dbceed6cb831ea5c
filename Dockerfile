# One image holding the three service binaries; docker-compose.yml picks one
# per container with `command:` (ingest | workers | api).

# ---- build -------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# sqlx's query macros must not try to reach a database during an image build;
# they use the checked-in .sqlx data when there is any.
ENV SQLX_OFFLINE=true
COPY . .
RUN cargo build --release --bin ingest --bin workers --bin api \
 && mkdir -p /out \
 && cp target/release/ingest target/release/workers target/release/api /out/

# ---- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: TLS to managed NATS/MongoDB/PostgreSQL; curl: healthchecks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home app
COPY --from=builder /out/ /usr/local/bin/
USER app
# ingest 8080 + admin 9101, workers admin 9102, api 8081 + admin 9103
EXPOSE 8080 8081 9101 9102 9103
CMD ["api"]
