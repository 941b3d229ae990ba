from pathlib import Path

import pytest

from litellm_claude_oauth.errors import ConfigError
from litellm_claude_oauth.settings import DEFAULT_TOKEN_URLS, Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.token_file == Path("~/.litellm/claude_tokens.json").expanduser()
    assert s.store == "file" and not s.encrypted and s.redis is None
    assert s.token_urls == DEFAULT_TOKEN_URLS
    assert s.client_id == "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
    assert s.default_account == "default"


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
