# The stackyard binary on a slim Debian base.
#   docker build -t stackyard .
#   docker run -p 8080:8080 -e STACKYARD_DATABASE_URL=postgres://... stackyard
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin stackyard

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/stackyard --create-home stackyard
COPY --from=build /src/target/release/stackyard /usr/local/bin/stackyard
USER stackyard
WORKDIR /var/lib/stackyard
ENV STACKYARD_LISTEN=0.0.0.0:8080 \
    STACKYARD_DATA_DIR=/var/lib/stackyard \
    STACKYARD_LOG_FORMAT=json
EXPOSE 8080
# Probes: GET /healthz (liveness) and GET /readyz (readiness: database,
# package store and NATS each answer) from the orchestrator.
ENTRYPOINT ["stackyard"]
CMD ["serve"]
