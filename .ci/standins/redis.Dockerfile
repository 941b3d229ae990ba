# Stand-in for redis:7-alpine (Debian's redis-server), for CI machines that
# cannot reach a container registry. Built by .ci/standins.sh only when the
# official image cannot be pulled.
FROM litellm-ci/bookworm-minbase:bookworm

# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data

# The official image turns protected mode off so other containers on the
# compose network can connect without a password; do the same for every
# `redis-server ...` the compose file runs (options given later win).
COPY redis-server.sh /usr/local/bin/redis-server

WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
