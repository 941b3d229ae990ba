# Stand-in for python:3.11-slim, for CI machines that cannot reach a container
# registry. Debian bookworm's Python 3.11 in a virtualenv at /usr/local, so
# `python` and `pip` sit where the official image has them, and
# docker/Dockerfile builds unchanged on top of it.
# Built by .ci/standins.sh only when python:3.11-slim cannot be pulled.
FROM litellm-ci/bookworm-minbase:bookworm

ENV LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /usr/local \
    && /usr/local/bin/python -c "import ssl, venv" \
    && /usr/local/bin/pip --version

# The machine's CA bundle and pip's certificate setting: this machine reaches
# PyPI through TLS interception, which the official image would not trust either.
# After apt-get: installing ca-certificates rewrites the bundle.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pip.conf /etc/pip.conf

CMD ["python3"]
