# Dockerfile: builds concert-server, payment-consumer and concertctl on Debian 12 and
# ships them with grpc-health-probe in a slim runtime image running as a non-root user.
# compose.yaml builds it once and runs every server and consumer from it. Checked in CI
# by the checklist of tests/ops/test_compose.sh (no Docker engine there).
#   docker build -t concert:local .
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-go-tools.sh scripts/
# Build packages only; Debian's Go (1.19) builds the pinned grpc-health-probe.
RUN scripts/install-deps.sh --build \
 && scripts/install-go-tools.sh --only grpc-health-probe \
 && rm -rf /root/.cache/go-build /root/go/pkg /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -G Ninja -DCONCERT_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
 && ninja -C /build concert-server payment-consumer concertctl

FROM debian:12-slim
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libgrpc29 libprotobuf-c1 libhiredis0.14 \
      librdkafka1 libuv1 libssl3 libatomic1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin concert
COPY --from=build /root/go/bin/grpc-health-probe /usr/local/bin/
COPY --from=build /build/server/concert-server /build/client/concertctl /build/consumers/payment-consumer /usr/local/bin/
USER concert
# gRPC, concert-server metrics, payment-consumer metrics
EXPOSE 50051 9100 9101
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["grpc-health-probe", "-addr", "127.0.0.1:50051"]
ENTRYPOINT ["concert-server"]
# The hosts of compose.yaml; override the command for another topology.
CMD ["--listen", "0.0.0.0:50051", \
     "--redis", "sentinel://sentinel1:26379,sentinel2:26379,sentinel3:26379/concert", \
     "--kafka", "kafka1:9092,kafka2:9092,kafka3:9092", "--metrics", "0.0.0.0:9100"]
