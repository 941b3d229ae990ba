# shellcheck shell=bash
# Sourced by scripts/serve and scripts/claude: the local (no Docker) environment, so the
# proxy and the CLI share one token store and one encryption key.

# .env.oauth holds the master key and the token encryption key; made once, kept private.
if [ ! -f .env.oauth ]; then
  (
    umask 077
    key=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')
    master=sk-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(24))')
    sed -e "s/^CLAUDE_TOKEN_ENCRYPTION_KEY=.*/CLAUDE_TOKEN_ENCRYPTION_KEY=$key/" \
        -e "s/^LITELLM_MASTER_KEY=.*/LITELLM_MASTER_KEY=$master/" .env.oauth.example > .env.oauth
  )
  echo "[env] created .env.oauth with a fresh LITELLM_MASTER_KEY and CLAUDE_TOKEN_ENCRYPTION_KEY" \
       "(keep it: tokens are encrypted with that key)" >&2
fi
set -a
# shellcheck disable=SC1091
. ./.env.oauth
set +a
# The Docker stack uses Postgres; locally the embedded default, the encrypted file, is used.
export CLAUDE_TOKEN_STORE=file
unset CLAUDE_OAUTH_DATABASE_URL DATABASE_URL REDIS_HOST REDIS_PORT REDIS_PASSWORD REDIS_URL
export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True
