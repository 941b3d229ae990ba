#!/bin/sh
# Entrypoint of the image: runs this package's `litellm` dispatcher
# (`litellm claude ...` is the OAuth CLI, anything else the LiteLLM proxy).
# The proxy starts only with a master key: config.oauth.yaml reads it from
# LITELLM_MASTER_KEY, and without one LiteLLM would answer every route,
# the admin-only /auth/claude/oauth/* included, for anyone who can connect.
set -eu
if [ "${1:-}" != claude ] && [ -z "${LITELLM_MASTER_KEY:-}" ]; then
    case " $* " in
        *" --help "* | *" --version "*) ;;
        *)
            echo "LITELLM_MASTER_KEY is not set: put it in .env.oauth (./test_oauth_docker.sh writes one) or pass -e LITELLM_MASTER_KEY=..." >&2
            exit 2
            ;;
    esac
fi
exec litellm "$@"
