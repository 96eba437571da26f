# bonde-pressure server image.
# Build:  docker build -t bonde-pressure .
# Run:    docker run -p 8000:8000 bonde-pressure        (demo: simulated telephony, SQLite)
# (Not built on the machine this was written on: no Docker engine there.)

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY examples ./examples
RUN cargo build --release --locked -p bonde-pressure-http --bin bonde-pressure \
    && cargo build --release --locked -p bonde-pressure-store --bin bonde-pressure-store

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app bonde \
    && mkdir -p /app /data && chown bonde /app /data
COPY --from=build /src/target/release/bonde-pressure /usr/local/bin/bonde-pressure
# Migrations as a separate step (a deployment job): `bonde-pressure-store migrate`.
COPY --from=build /src/target/release/bonde-pressure-store /usr/local/bin/bonde-pressure-store
USER bonde
WORKDIR /app
ENV PORT=8000 \
    HOST=0.0.0.0 \
    LOG_FORMAT=json \
    DATABASE_URL=sqlite:///data/bonde-pressure.db
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/healthz" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["bonde-pressure"]
