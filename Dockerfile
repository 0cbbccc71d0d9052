# syntax=docker/dockerfile:1
# pgwire-proxy: multi-stage image on Debian 12 (bookworm).
#   docker build -t pgwire-proxy .
#   docker run --rm -p 5433:5433 -p 127.0.0.1:9187:9187 \
#     -e PGWIRE_PROXY_UPSTREAM='host=db.internal dbname=app user=readonly password=...' pgwire-proxy
# Configuration is PGWIRE_PROXY_* environment (see docs/pgwire-proxy.1), or mount an INI file
# and pass `--config /etc/pgwire-proxy/pgwire-proxy.ini`.

ARG DEBIAN_IMAGE=debian:bookworm

# ---- build: compile, run the unit tests, install into /out ----------------------------------
FROM ${DEBIAN_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libpq-dev libssl-dev libpg-query-dev libprotobuf-c-dev libmicrohttpd-dev libinih-dev \
      libcmocka-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY src/ src/
COPY tests/unit/ tests/unit/
COPY docs/ docs/
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
 && cmake --build build -j"$(nproc)" \
 && (cd build && ctest --output-on-failure -L unit -LE proof) \
 && DESTDIR=/out cmake --install build \
 && strip --strip-unneeded /out/usr/bin/pgwire-proxy

# ---- runtime: only the shared libraries the binary links ------------------------------------
FROM ${DEBIAN_IMAGE}-slim AS runtime
# libpq5 (upstream connections), libssl3 (TLS), libpg-query1504.0 (statement policy),
# libmicrohttpd12 (/metrics, /healthz), libinih1 (--config); ca-certificates for upstream
# sslmode=verify-full against public CAs.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpq5 libssl3 libpg-query1504.0 libmicrohttpd12 libinih1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 5433 pgwire-proxy \
 && useradd --system --uid 5433 --gid pgwire-proxy --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin pgwire-proxy \
 && mkdir -p /etc/pgwire-proxy
COPY --from=build /out/usr/bin/pgwire-proxy /usr/bin/pgwire-proxy
COPY --from=build /out/usr/share/man/man1/pgwire-proxy.1 /usr/share/man/man1/pgwire-proxy.1
COPY deploy/pgwire-proxy.ini.example /etc/pgwire-proxy/pgwire-proxy.ini.example

# In a container the proxy must listen on all interfaces (the default is loopback only). The
# metrics port has no authentication: publish it on the host's loopback or a private address
# only (-p 127.0.0.1:9187:9187), never with a bare -p 9187:9187, which is every interface.
ENV PGWIRE_PROXY_LISTEN=0.0.0.0:5433 \
    PGWIRE_PROXY_METRICS_LISTEN=0.0.0.0:9187
USER pgwire-proxy:pgwire-proxy
EXPOSE 5433 9187
# SIGTERM drains sessions for --shutdown-timeout (30 s): give `docker stop -t 45` or compose's
# stop_grace_period: 45s.
STOPSIGNAL SIGTERM
# No curl/wget in the slim image: bash's /dev/tcp speaks just enough HTTP for /healthz, which
# answers 200 while the upstream accepts the DSN's login and 503 while shutting down or when it
# does not (one shared probe at most every 2 s). It assumes the metrics port 9187.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9187 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r -t 2 proto code rest <&3 && [ \"$code\" = 200 ]"]
ENTRYPOINT ["/usr/bin/pgwire-proxy"]
