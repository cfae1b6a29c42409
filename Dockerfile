# dissonance serve in a container: build with the -dev libraries, run with only the two
# shared libraries the binary links (libpcap for sniff, libopus for voice).
#   docker build -t dissonance .
#   docker run --rm -p 47200:47200/udp -p 9464:9464 dissonance
# Arguments after the image name replace the CMD below (ENTRYPOINT is `dissonance serve`).

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcap-dev libopus-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin dissonance \
 && strip target/release/dissonance

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcap0.8 libopus0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin dissonance
COPY --from=build /src/target/release/dissonance /usr/local/bin/dissonance
USER 10001
# Voice (UDP) and metrics/health (HTTP).
EXPOSE 47200/udp 9464/tcp
ENTRYPOINT ["dissonance", "serve"]
CMD ["--listen", "0.0.0.0:47200", "--metrics", "0.0.0.0:9464", "--log-format", "ndjson", "--drain", "25s"]
