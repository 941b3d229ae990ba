import subprocess
import sys
from pathlib import Path

import pytest

from litellm_claude_oauth import __version__
from litellm_claude_oauth.errors import ConfigError
from litellm_claude_oauth.settings import (
    DEFAULT_TOKEN_URLS,
    ENV,
    Settings,
    env_names,
    env_table_markdown,
    missing_from_readme,
)


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.token_file == Path("~/.litellm/claude_tokens.json").expanduser()
    assert s.store == "file" and not s.encrypted and s.redis is None
    assert s.token_urls == DEFAULT_TOKEN_URLS
    assert s.client_id == "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
    assert s.default_account == "default"
    assert s.redirect_uri == "https://platform.claude.com/oauth/code/callback"
    assert s.token_urls == ("https://platform.claude.com/v1/oauth/token", "https://api.anthropic.com/v1/oauth/token")
    assert s.user_agent == f"litellm-claude-oauth/{__version__}"
    assert s.refresh_token_default_days == 30 and s.refresh_warning_days == 3
    assert s.passthrough == "auto" and s.pool_strategy == "round-robin"
    assert s.quota_skip_threshold == 0.95 and s.session_ttl_seconds == 3600
    assert s.alert_webhook_url is None and s.alert_utilization == 0.9 and s.alert_refresh_failures == 3
    assert s.metrics_token is None and s.allow_plaintext_migration is False
    assert s.claude_code_credentials_file == Path("~/.claude/.credentials.json").expanduser()


def test_every_variable_is_read() -> None:
    s = Settings.from_env(
        {
            "CLAUDE_OAUTH_CLIENT_ID": "cid",
            "CLAUDE_OAUTH_AUTHORIZE_URL": "http://a/authorize",
            "CLAUDE_OAUTH_TOKEN_URL": "http://t1/token, http://t2/token",
            "CLAUDE_OAUTH_REDIRECT_URI": "http://cb",
            "CLAUDE_OAUTH_SCOPES": "user:inference",
            "CLAUDE_API_BASE": "http://api",
            "CLAUDE_TOKEN_FILE": "/tmp/x.json",
            "CLAUDE_TOKEN_ENCRYPTION_KEY": "ab" * 32,
            "CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD": "cd" * 32 + "," + "ef" * 32,
            "CLAUDE_TOKEN_STORE": "postgres",
            "CLAUDE_OAUTH_DATABASE_URL": "postgresql://u:p@h/db",
            "CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS": "120",
            "USER_ID": "user_2",
            "REDIS_HOST": "redis",
            "REDIS_PASSWORD": "p@ss",
        }
    )
    assert s.client_id == "cid" and s.authorize_url == "http://a/authorize"
    assert s.token_urls == ("http://t1/token", "http://t2/token")
    assert s.redirect_uri == "http://cb" and s.scopes == "user:inference" and s.api_base == "http://api"
    assert s.token_file == Path("/tmp/x.json") and s.encrypted and len(s.old_encryption_keys) == 2
    assert s.store == "postgres" and s.refresh_margin_seconds == 120 and s.default_account == "user_2"
    assert s.redis is not None and s.redis.url.get_secret_value() == "redis://:p%40ss@redis:6379/0"


def test_database_url_falls_back_to_litellm_variable() -> None:
    s = Settings.from_env({"CLAUDE_TOKEN_STORE": "postgres", "DATABASE_URL": "postgresql://h/db"})
    assert s.database_url is not None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLAUDE_TOKEN_ENCRYPTION_KEY": "short"}, "CLAUDE_TOKEN_ENCRYPTION_KEY must be 64 hex characters"),
        ({"CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD": "zz" * 32}, "CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD must be 64 hex"),
        ({"CLAUDE_TOKEN_STORE": "s3"}, "CLAUDE_TOKEN_STORE must be 'file' or 'postgres'"),
        ({"CLAUDE_TOKEN_STORE": "postgres"}, "needs CLAUDE_OAUTH_DATABASE_URL"),
        ({"CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS": "soon"}, "CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS"),
        ({"CLAUDE_OAUTH_TOKEN_URL": "ftp://x"}, "CLAUDE_OAUTH_TOKEN_URL"),
        ({"USER_ID": "../etc"}, "USER_ID account id must be"),
    ],
)
def test_bad_values_give_one_clear_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Settings.from_env(env)
    assert "\n" not in str(info.value)
    assert "zz" * 32 not in str(info.value)  # the value itself (maybe a key) is never echoed


def test_empty_system_prompt_disables_identity_block() -> None:
    assert Settings.from_env({"CLAUDE_CODE_SYSTEM_PROMPT": ""}).system_prompt == ""


def test_new_variables_are_read() -> None:
    s = Settings.from_env(
        {
            "CLAUDE_OAUTH_USER_AGENT": "my-gateway/2.0 (ops@example.com)",
            "CLAUDE_OAUTH_REFRESH_TOKEN_DAYS": "29.5",
            "CLAUDE_OAUTH_REFRESH_WARNING_DAYS": "5",
            "CLAUDE_OAUTH_PASSTHROUGH": "required",
            "CLAUDE_OAUTH_POOL_STRATEGY": "least-used",
            "CLAUDE_OAUTH_QUOTA_THRESHOLD": "0.8",
            "CLAUDE_OAUTH_SESSION_TTL": "0",
            "CLAUDE_OAUTH_ALERT_WEBHOOK_URL": "https://hooks.example.com/T000/B000/secret",
            "CLAUDE_OAUTH_ALERT_UTILIZATION": "0.75",
            "CLAUDE_OAUTH_ALERT_REFRESH_FAILURES": "5",
            "CLAUDE_OAUTH_METRICS_TOKEN": "metrics-secret",
            "CLAUDE_CODE_CREDENTIALS_FILE": "/srv/claude/creds.json",
            "CLAUDE_TOKEN_ALLOW_PLAINTEXT_MIGRATION": "1",
            "CLAUDE_OAUTH_HTTP_TIMEOUT": "12.5",
            "CLAUDE_OAUTH_LOCK_TTL_SECONDS": "20",
            "CLAUDE_OAUTH_STATE_TTL_SECONDS": "900",
            "CLAUDE_OAUTH_POOL": "alice, bob",
            "CLAUDE_OAUTH_ACCOUNT_MAP": '{"team:t1": "alice"}',
        }
    )
    assert s.user_agent == "my-gateway/2.0 (ops@example.com)"
    assert s.refresh_token_default_days == 29.5 and s.refresh_token_default_seconds == 29.5 * 86400
    assert s.refresh_warning_days == 5 and s.refresh_warning_seconds == 5 * 86400
    assert s.passthrough == "required" and s.pool_strategy == "least-used"
    assert s.quota_skip_threshold == 0.8 and s.session_ttl_seconds == 0
    assert s.alert_webhook_url is not None and s.alert_webhook_url.get_secret_value().endswith("/secret")
    assert "secret" not in repr(s)  # webhook URL and metrics token are SecretStr
    assert s.alert_utilization == 0.75 and s.alert_refresh_failures == 5
    assert s.metrics_token is not None and s.metrics_token.get_secret_value() == "metrics-secret"
    assert s.claude_code_credentials_file == Path("/srv/claude/creds.json")
    assert s.allow_plaintext_migration is True
    assert s.http_timeout_seconds == 12.5 and s.lock_ttl_seconds == 20 and s.login_state_ttl_seconds == 900
    assert s.pool_accounts == ("alice", "bob") and s.account_map == {"team:t1": "alice"}


SAMPLES = {
    "CLAUDE_TOKEN_STORE": "postgres",
    "CLAUDE_TOKEN_FILE": "/srv/tokens.json",
    "CLAUDE_TOKEN_ENCRYPTION_KEY": "ab" * 32,
    "CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD": "cd" * 32,
    "CLAUDE_TOKEN_ALLOW_PLAINTEXT_MIGRATION": "yes",
    "CLAUDE_OAUTH_DATABASE_URL": "postgresql://a/b",
    "DATABASE_URL": "postgresql://c/d",
    "CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS": "60",
    "CLAUDE_OAUTH_REFRESH_TOKEN_DAYS": "20",
    "CLAUDE_OAUTH_REFRESH_WARNING_DAYS": "7",
    "CLAUDE_OAUTH_DEFAULT_ACCOUNT": "alice",
    "USER_ID": "bob",
    "CLAUDE_CODE_SYSTEM_PROMPT": "",
    "CLAUDE_OAUTH_CLIENT_ID": "cid",
    "CLAUDE_OAUTH_AUTHORIZE_URL": "https://claude.com/cai/oauth/authorize",
    "CLAUDE_OAUTH_TOKEN_URL": "https://api.anthropic.com/v1/oauth/token",
    "CLAUDE_OAUTH_REDIRECT_URI": "http://localhost:54545/callback",
    "CLAUDE_OAUTH_SCOPES": "user:inference",
    "CLAUDE_OAUTH_USER_AGENT": "gw/1",
    "CLAUDE_OAUTH_STATE_TTL_SECONDS": "300",
    "CLAUDE_OAUTH_HTTP_TIMEOUT": "5",
    "CLAUDE_API_BASE": "http://127.0.0.1:9",
    "CLAUDE_CODE_CREDENTIALS_FILE": "/srv/creds.json",
    "CLAUDE_OAUTH_PASSTHROUGH": "off",
    "CLAUDE_OAUTH_POOL": "a,b",
    "CLAUDE_OAUTH_POOL_STRATEGY": "fill-first",
    "CLAUDE_OAUTH_QUOTA_THRESHOLD": "0.5",
    "CLAUDE_OAUTH_SESSION_TTL": "60",
    "CLAUDE_OAUTH_ACCOUNT_MAP": '{"key:k": "pool"}',
    "CLAUDE_OAUTH_LOCK_TTL_SECONDS": "30",
    "CLAUDE_OAUTH_ALERT_WEBHOOK_URL": "https://hooks.example.com/x",
    "CLAUDE_OAUTH_ALERT_UTILIZATION": "0.5",
    "CLAUDE_OAUTH_ALERT_REFRESH_FAILURES": "9",
    "CLAUDE_OAUTH_METRICS_TOKEN": "m",
}
# Needed alongside a sample for the settings to be valid at all.
COMPANIONS = {
    "CLAUDE_TOKEN_STORE": {"DATABASE_URL": "postgresql://h/db"},
    "CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD": {"CLAUDE_TOKEN_ENCRYPTION_KEY": "ef" * 32},
}


def test_env_table_covers_every_setting() -> None:
    covered = {var.field for var in ENV.values()}
    assert set(Settings.model_fields) - covered == {"redis"}  # composed from the REDIS_* variables
    assert [n for n, v in ENV.items() if v.field is None] == [
        "REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_SSL", "CLAUDE_CODE_OAUTH_TOKEN",
        "CLAUDE_SETUP_TOKEN", "LITELLM_CONFIG",  # read by the CLI
    ]  # fmt: skip
    for name, var in ENV.items():
        assert var.doc and "\n" not in var.doc and "|" not in var.doc, name


@pytest.mark.parametrize("name", [n for n, v in ENV.items() if v.field is not None])
def test_every_table_entry_is_read(name: str) -> None:
    field = ENV[name].field
    assert field is not None and name in SAMPLES, f"add a sample value for {name}"
    base = Settings.from_env(COMPANIONS.get(name, {}))
    changed = Settings.from_env({**COMPANIONS.get(name, {}), name: SAMPLES[name]})
    assert getattr(changed, field) != getattr(base, field), name


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLAUDE_OAUTH_PASSTHROUGH": "maybe"}, "CLAUDE_OAUTH_PASSTHROUGH must be 'auto', 'off' or 'required'"),
        (
            {"CLAUDE_OAUTH_POOL_STRATEGY": "random"},
            "CLAUDE_OAUTH_POOL_STRATEGY must be 'round-robin', 'fill-first' or 'least-used'",
        ),
        ({"CLAUDE_OAUTH_QUOTA_THRESHOLD": "0"}, "CLAUDE_OAUTH_QUOTA_THRESHOLD"),
        ({"CLAUDE_OAUTH_QUOTA_THRESHOLD": "1.5"}, "CLAUDE_OAUTH_QUOTA_THRESHOLD"),
        ({"CLAUDE_OAUTH_ALERT_UTILIZATION": "90"}, "CLAUDE_OAUTH_ALERT_UTILIZATION"),
        ({"CLAUDE_OAUTH_ALERT_REFRESH_FAILURES": "0"}, "CLAUDE_OAUTH_ALERT_REFRESH_FAILURES"),
        ({"CLAUDE_OAUTH_ALERT_WEBHOOK_URL": "hooks.example.com/zz"}, "CLAUDE_OAUTH_ALERT_WEBHOOK_URL must be an http"),
        ({"CLAUDE_OAUTH_REFRESH_TOKEN_DAYS": "0"}, "CLAUDE_OAUTH_REFRESH_TOKEN_DAYS"),
        ({"CLAUDE_OAUTH_REFRESH_WARNING_DAYS": "-1"}, "CLAUDE_OAUTH_REFRESH_WARNING_DAYS"),
        ({"CLAUDE_OAUTH_SESSION_TTL": "forever"}, "CLAUDE_OAUTH_SESSION_TTL"),
        ({"CLAUDE_TOKEN_ALLOW_PLAINTEXT_MIGRATION": "please"}, "CLAUDE_TOKEN_ALLOW_PLAINTEXT_MIGRATION must be 1/0"),
        ({"CLAUDE_OAUTH_USER_AGENT": "claude-cli/2.1.300 (external, cli)"}, "must name this client, not Claude Code"),
        ({"CLAUDE_OAUTH_USER_AGENT": "bad\x00agent"}, "CLAUDE_OAUTH_USER_AGENT must be one line"),
        ({"CLAUDE_OAUTH_REDIRECT_URI": "platform.claude.com/cb"}, "CLAUDE_OAUTH_REDIRECT_URI"),
        ({"CLAUDE_OAUTH_DEFAULT_ACCOUNT": "../x", "USER_ID": "ok"}, "CLAUDE_OAUTH_DEFAULT_ACCOUNT account id must"),
        # Audit L3: a margin as long as an access token's life refreshed on every request.
        ({"CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS": "7200"}, "CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS"),
    ],
)
def test_bad_new_values_give_one_clear_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Settings.from_env(env)
    assert "\n" not in str(info.value) and "zz" not in str(info.value)


def test_old_keys_without_a_current_key_are_refused() -> None:
    # Audit M3: otherwise every record read would be re-written in clear.
    with pytest.raises(ConfigError, match="KEYS_OLD is set without CLAUDE_TOKEN_ENCRYPTION_KEY") as info:
        Settings.from_env({"CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD": "ab" * 32})
    assert "\n" not in str(info.value) and "ab" * 32 not in str(info.value)


def test_default_account_prefers_the_new_name_and_ignores_a_uid() -> None:
    assert Settings.from_env({"CLAUDE_OAUTH_DEFAULT_ACCOUNT": "alice", "USER_ID": "bob"}).default_account == "alice"
    assert Settings.from_env({"USER_ID": "user_2"}).default_account == "user_2"  # the user guide's way
    assert Settings.from_env({"USER_ID": "1000"}).default_account == "default"  # a container uid
    assert Settings.from_env({"CLAUDE_OAUTH_DEFAULT_ACCOUNT": "1000"}).default_account == "1000"  # explicit: kept
    assert env_names("default_account") == ["CLAUDE_OAUTH_DEFAULT_ACCOUNT", "USER_ID"]


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"REDIS_HOST": "r", "REDIS_SSL": "True"}, "rediss://r:6379/0"),
        ({"REDIS_HOST": "r", "REDIS_SSL": "false"}, "redis://r:6379/0"),
        ({"REDIS_HOST": "r", "REDIS_USERNAME": "app", "REDIS_PASSWORD": "p@ss:/"}, "redis://app:p%40ss%3A%2F@r:6379/0"),
        ({"REDIS_HOST": "r", "REDIS_USERNAME": "app"}, "redis://app@r:6379/0"),
        ({"REDIS_HOST": "::1", "REDIS_PORT": "6380"}, "redis://[::1]:6380/0"),
        ({"REDIS_HOST": "[fd00::5]"}, "redis://[fd00::5]:6379/0"),
        (
            {"REDIS_URL": "rediss://u:p@cache.internal:6380/2", "REDIS_HOST": "ignored"},
            "rediss://u:p@cache.internal:6380/2",
        ),
        ({"REDIS_URL": "unix:///run/redis.sock"}, "unix:///run/redis.sock"),
    ],
)
def test_redis_url(env: dict[str, str], url: str) -> None:
    s = Settings.from_env(env)
    assert s.redis is not None and s.redis.url.get_secret_value() == url


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must look like redis://"),
        ({"REDIS_URL": "redis://:hunter2@host:port/0"}, "REDIS_URL must look like redis://"),
        ({"REDIS_URL": "http://host:6379"}, "REDIS_URL must look like redis://"),
        ({"REDIS_URL": "redis://"}, "REDIS_URL must look like redis://"),
        ({"REDIS_HOST": "r", "REDIS_PORT": "sixty"}, "REDIS_PORT must be a port number"),
        ({"REDIS_HOST": "user:hunter2@r"}, "REDIS_HOST must be a host name"),
    ],
)
def test_malformed_redis_settings_are_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Settings.from_env(env)
    assert "\n" not in str(info.value) and "hunter2" not in str(info.value)


def test_missing_from_readme_names_undocumented_variables() -> None:
    names = list(ENV)
    readme = "| Variable |\n" + "\n".join(f"| `{n}` | x |" for n in names if n not in ("REDIS_SSL", "USER_ID"))
    # Substrings of longer names do not count: DATABASE_URL is in CLAUDE_OAUTH_DATABASE_URL.
    readme = readme.replace("| `DATABASE_URL` |", "| `X_DATABASE_URLS` |")
    assert missing_from_readme(readme) == [n for n in names if n in ("DATABASE_URL", "REDIS_SSL", "USER_ID")]
    assert missing_from_readme(" ".join(names)) == []
    assert missing_from_readme(env_table_markdown()) == []


def test_settings_import_stays_light() -> None:
    # `litellm claude status` must start fast: no httpx, LiteLLM or database drivers.
    code = (
        "import sys; import litellm_claude_oauth.settings, litellm_claude_oauth.tokens, litellm_claude_oauth.crypto; "
        "heavy = [m for m in ('httpx', 'litellm', 'psycopg', 'redis', 'fastapi') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_home_is_read_when_settings_are_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Settings.from_env({})
    assert s.token_file == tmp_path / ".litellm" / "claude_tokens.json"
    assert s.claude_code_credentials_file == tmp_path / ".claude" / ".credentials.json"


def test_account_map_takes_team_alias_as_its_own_selector() -> None:
    settings = Settings.from_env({"CLAUDE_OAUTH_ACCOUNT_MAP": '{"team_alias:blue": "alice", "team:t1": "pool"}'})
    assert settings.account_map == {"team_alias:blue": "alice", "team:t1": "pool"}
    with pytest.raises(ConfigError, match="team_alias:<alias>"):
        Settings.from_env({"CLAUDE_OAUTH_ACCOUNT_MAP": '{"teams:x": "alice"}'})
