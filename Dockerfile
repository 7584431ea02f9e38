# Dockerfile: builds concert-server, payment-consumer and concertctl on Debian 12 and
# ships them in a slim runtime image. Not used by the tests or CI (no Docker engine
# there); see compose.yaml for the full topology.
#   docker build -t concert .
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN scripts/install-deps.sh --debian
COPY . .
RUN cmake -S . -B /build -G Ninja -DCONCERT_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
 && ninja -C /build

FROM debian:12-slim
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libgrpc29 libprotobuf-c1 libhiredis0.14 \
      librdkafka1 libuv1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/server/concert-server /build/client/concertctl /usr/local/bin/
COPY --from=build /build/consumers/payment-consumer /usr/local/bin/
USER nobody
EXPOSE 50051 9100
ENTRYPOINT ["concert-server"]
CMD ["--listen", "0.0.0.0:50051", "--redis", "redis://redis:6379", "--kafka", "kafka:9092", "--metrics", "0.0.0.0:9100"]
