# Multi-stage build: compile on Debian 12 with the -dev packages, run on a
# slim Debian 12 with only the runtime libraries, as a non-root user.
#   docker build -t samlgate .
#   docker run -p 8080:8080 -p 127.0.0.1:9090:9090 \
#     -v $PWD/prod.toml:/etc/samlgate/samlgate.toml:ro -v $PWD/certs:/etc/samlgate/certs:ro \
#     -v samlgate-data:/var/lib/samlgate samlgate
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      pkg-config libssl-dev libxml2-dev libxmlsec1-dev libclang-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin samlgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates libssl3 libxml2 libxmlsec1 libxmlsec1-openssl && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/samlgate samlgate \
    && mkdir -p /var/lib/samlgate /etc/samlgate && chown samlgate /var/lib/samlgate
COPY --from=build /src/target/release/samlgate /usr/local/bin/samlgate
USER samlgate
WORKDIR /var/lib/samlgate
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/samlgate"]
CMD ["serve", "--config", "/etc/samlgate/samlgate.toml"]
