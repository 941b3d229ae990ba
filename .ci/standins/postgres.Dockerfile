# Stand-in for postgres:16 (Debian bookworm's PostgreSQL 15), for CI machines
# that cannot reach a container registry. Built by .ci/standins.sh only when
# the official image cannot be pulled. It keeps the parts of the official
# image the compose stack relies on: POSTGRES_USER/PASSWORD/DB applied on the
# first start of an empty data volume, a UTF-8 database, trust on the local
# socket (`docker exec litellm-db-1 psql -U llmproxy -d litellm`), passwords
# over TCP, data in /var/lib/postgresql/data, pg_isready and psql on PATH.
FROM litellm-ci/bookworm-minbase:bookworm

# No cluster from the package: the entrypoint creates one in the volume.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-common \
    && sed -ri 's/#?\s*create_main_cluster\s*=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql

ENV LANG=C.UTF-8 \
    PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data

COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
