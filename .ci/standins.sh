#!/usr/bin/env bash
# Make the base images of the compose stack available to the local Docker
# engine: python:3.11-slim, postgres:16 and redis:7-alpine. An image already
# present is used; otherwise it is pulled; only when the pull fails (no
# registry reachable) is a stand-in built from Debian bookworm packages
# (.ci/standins/*.Dockerfile) and tagged with the official name.
#
# The stand-ins share one base: a `debootstrap --variant=minbase bookworm`
# root file system, kept as a tarball in $CI_CACHE_DIR (outside the clone, so
# later CI runs on this machine skip the ~35 s debootstrap) and loaded with
# `docker import`.
#
# Usage: bash .ci/standins.sh [IMAGE...]   (default: all three)
# Env:   CI_CACHE_DIR (default /var/cache/litellm-claude-oauth-ci),
#        DEBIAN_MIRROR (default: the first deb.debian.org-style URI apt uses),
#        PULL_TIMEOUT (seconds per pull attempt, default 20)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CI_CACHE_DIR=${CI_CACHE_DIR:-/var/cache/litellm-claude-oauth-ci}
PULL_TIMEOUT=${PULL_TIMEOUT:-20}
BASE_IMAGE=litellm-ci/bookworm-minbase:bookworm
BASE_TARBALL=$CI_CACHE_DIR/bookworm-minbase.tar
STANDINS=.ci/standins

log() { printf '[standins] %s\n' "$*"; }

debian_mirror() {
    if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
    echo "${uri:-http://deb.debian.org/debian}"
}

# The debootstrap tarball: built once per machine, then read from the cache.
ensure_base_tarball() {
    [[ -s $BASE_TARBALL ]] && return 0
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "apt-get install debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    local root started=$SECONDS
    mkdir -p "$CI_CACHE_DIR"
    root=$(mktemp -d "$CI_CACHE_DIR/rootfs.XXXXXX")
    log "debootstrap --variant=minbase bookworm ($(debian_mirror))"
    if ! debootstrap --variant=minbase bookworm "$root" "$(debian_mirror)" >"$CI_CACHE_DIR/debootstrap.log" 2>&1; then
        tail -n 20 "$CI_CACHE_DIR/debootstrap.log" >&2
        rm -rf "$root"
        return 1
    fi
    # apt inside the image must not keep the .debs (image size) and needs no
    # recommends; the official images are configured the same way.
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/90ci-slim"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" --numeric-owner -cf "$BASE_TARBALL.tmp" .
    mv "$BASE_TARBALL.tmp" "$BASE_TARBALL"
    rm -rf "$root"
    log "base tarball $BASE_TARBALL ($(du -h "$BASE_TARBALL" | cut -f1), $((SECONDS - started))s)"
}

ensure_base_image() {
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
    ensure_base_tarball
    log "docker import $BASE_TARBALL $BASE_IMAGE"
    docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["bash"]' "$BASE_TARBALL" "$BASE_IMAGE" >/dev/null
}

# build_standin IMAGE DOCKERFILE: a small build context holding only what the
# Dockerfile copies.
build_standin() {
    local image=$1 dockerfile=$2 ctx
    ctx=$(mktemp -d)
    cp "$STANDINS"/*.sh "$STANDINS/pip.conf" "$ctx/"
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
    log "building stand-in $image from $dockerfile"
    # --network host: apt inside the build uses this machine's resolver and mirror.
    # The classic builder: these Dockerfiles need nothing from BuildKit, and a
    # docker client without the buildx plugin refuses DOCKER_BUILDKIT=1.
    if ! DOCKER_BUILDKIT=0 docker build --network host -t "$image" -f "$dockerfile" "$ctx" >"$ctx/build.log" 2>&1; then
        tail -n 30 "$ctx/build.log" >&2
        rm -rf "$ctx"
        log "building the stand-in $image failed"
        return 1
    fi
    rm -rf "$ctx"
}

standin_dockerfile() {
    case $1 in
        python:3.11-slim) echo "$STANDINS/python.Dockerfile" ;;
        postgres:16) echo "$STANDINS/postgres.Dockerfile" ;;
        redis:7-alpine) echo "$STANDINS/redis.Dockerfile" ;;
        *) return 1 ;;
    esac
}

# available IMAGE: present already, or pulled now.
available() {
    if docker image inspect "$1" >/dev/null 2>&1; then
        log "$1: present"
    elif timeout "$PULL_TIMEOUT" docker pull -q "$1" >/dev/null 2>&1; then
        log "$1: pulled"
    else
        return 1
    fi
}

main() {
    local images=("$@") missing=() image
    ((${#images[@]})) || images=(python:3.11-slim postgres:16 redis:7-alpine)
    for image in "${images[@]}"; do
        available "$image" && continue
        standin_dockerfile "$image" >/dev/null || { log "$image cannot be pulled and has no stand-in"; return 1; }
        log "$image: cannot be pulled, building a stand-in"
        missing+=("$image")
    done
    ((${#missing[@]})) || return 0
    ensure_base_image
    # In parallel: each build mostly waits for apt downloads.
    local pids=() failed=0 i
    for image in "${missing[@]}"; do
        build_standin "$image" "$(standin_dockerfile "$image")" &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || failed=1
    done
    ((failed == 0)) || return 1
    log "stand-ins ready: ${missing[*]}"
}

main "$@"
