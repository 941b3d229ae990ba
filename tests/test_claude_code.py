"""Claude Code's credentials file: read, atomic write-back, and the linked-refresh hooks."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from litellm_claude_oauth import claude_code
from litellm_claude_oauth.claude_code import CredentialsFileError, LinkedCredentials, read_credentials, write_back
from litellm_claude_oauth.tokens import TokenSet

NOW = 1_800_000_000.0


def cc_doc(access: str = "sk-ant-oat01-cc", refresh: str | None = "sk-ant-ort01-cc", expires: float = NOW + 3600) -> dict[str, Any]:
    oauth: dict[str, Any] = {
        "accessToken": access,
        "expiresAt": int(expires * 1000),
        "scopes": ["user:inference", "user:profile"],
        "subscriptionType": "max",
        "rateLimitTier": "default_claude_max_20x",
    }
    if refresh is not None:
        oauth["refreshToken"] = refresh
    return {"claudeAiOauth": oauth, "mcpOAuth": {"server": {"accessToken": "mcp-secret"}}}


def tokens(access: str, refresh: str | None, expires_at: float, **extra: Any) -> TokenSet:
    return TokenSet(
        access_token=SecretStr(access),
        refresh_token=SecretStr(refresh) if refresh else None,
        expires_at=expires_at,
        **extra,
    )


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    path = tmp_path / ".claude" / ".credentials.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cc_doc()))
    path.chmod(0o600)
    return path


def test_read_credentials(creds: Path) -> None:
    got = read_credentials(creds)
    assert got.access == "sk-ant-oat01-cc" and got.refresh == "sk-ant-ort01-cc"
    assert got.expires_at == NOW + 3600 and got.source == "claude-code"
    assert got.scope == "user:inference user:profile" and got.subscription_type == "max"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist (Claude Code on macOS keeps its login in the Keychain"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"other": 1}', "has no claudeAiOauth entry"),
        ('{"claudeAiOauth": {"refreshToken": "sk-ant-ort01-secret"}}', "has no claudeAiOauth.accessToken"),
        ('{"claudeAiOauth": {"accessToken": "sk-ant-oat01-x", "expiresAt": "soon-sk-ant-ort01-secret"}}', "unusable"),
    ],
)
def test_read_credentials_errors_are_clear_and_never_echo_tokens(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "creds.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CredentialsFileError) as info:
        read_credentials(path)
    assert message in str(info.value) and "secret" not in str(info.value) and "\n" not in str(info.value)


def test_write_back_keeps_other_keys_and_is_private(creds: Path) -> None:
    creds.chmod(0o644)  # even a too-open file ends up private
    new = tokens("sk-ant-oat01-new", "sk-ant-ort01-new", NOW + 28_800.5, scope="user:inference")
    write_back(creds, new)
    doc = json.loads(creds.read_text())
    oauth = doc["claudeAiOauth"]
    assert oauth["accessToken"] == "sk-ant-oat01-new" and oauth["refreshToken"] == "sk-ant-ort01-new"
    assert oauth["expiresAt"] == int((NOW + 28_800.5) * 1000) and isinstance(oauth["expiresAt"], int)
    assert oauth["scopes"] == ["user:inference"]
    # Claude Code's own fields survive.
    assert oauth["rateLimitTier"] == "default_claude_max_20x" and oauth["subscriptionType"] == "max"
    assert doc["mcpOAuth"] == {"server": {"accessToken": "mcp-secret"}}
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert read_credentials(creds).access == "sk-ant-oat01-new"
    assert [p.name for p in creds.parent.iterdir()] == [creds.name]  # no temp files left behind


def test_write_back_follows_a_symlink(creds: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(creds)
    write_back(link, tokens("sk-ant-oat01-new", "sk-ant-ort01-new", NOW))
    assert link.is_symlink() and read_credentials(creds).access == "sk-ant-oat01-new"


def test_write_back_refuses_to_overwrite_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    path.write_text("{half written")
    with pytest.raises(CredentialsFileError, match="not valid JSON"):
        write_back(path, tokens("sk-ant-oat01-new", "sk-ant-ort01-new", NOW))
    assert path.read_text() == "{half written"


def test_write_back_failure_leaves_the_old_file_whole(creds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = creds.read_bytes()

    def crash(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        write_back(creds, tokens("sk-ant-oat01-new", "sk-ant-ort01-new", NOW))
    assert creds.read_bytes() == before
    assert [p.name for p in creds.parent.iterdir()] == [creds.name]


def test_write_back_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / ".credentials.json"
    write_back(path, tokens("sk-ant-oat01-new", "sk-ant-ort01-new", NOW))
    assert read_credentials(path).refresh == "sk-ant-ort01-new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_before_refresh_adopts_a_rotation_by_claude_code(creds: Path) -> None:
    ours = tokens("sk-ant-oat01-old", "sk-ant-ort01-old", NOW - 10, account_email="me@example.com", account_uuid="u-1")
    linked = LinkedCredentials(creds)
    # Claude Code's file holds a different (rotated) grant: adopt it, keep our account fields.
    theirs = await linked.before_refresh(ours)
    assert theirs is not None and theirs.refresh == "sk-ant-ort01-cc" and theirs.access == "sk-ant-oat01-cc"
    assert theirs.account_email == "me@example.com" and theirs.account_uuid == "u-1"
    assert theirs.expires_at == NOW + 3600


async def test_before_refresh_is_none_when_nothing_changed(creds: Path) -> None:
    linked = LinkedCredentials(creds)
    same = read_credentials(creds)
    assert await linked.before_refresh(same) is None
    # Same refresh token and an older file access token: not newer.
    newer = tokens("sk-ant-oat01-ours", "sk-ant-ort01-cc", NOW + 7200)
    assert await linked.before_refresh(newer) is None


async def test_before_refresh_ignores_a_file_without_refresh_token(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps(cc_doc(access="sk-ant-oat01-other", refresh=None)))
    assert await LinkedCredentials(path).before_refresh(tokens("sk-ant-oat01-a", "sk-ant-ort01-a", NOW)) is None


async def test_before_refresh_survives_a_missing_or_broken_file(tmp_path: Path) -> None:
    ours = tokens("sk-ant-oat01-a", "sk-ant-ort01-a", NOW)
    assert await LinkedCredentials(tmp_path / "missing.json").before_refresh(ours) is None
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert await LinkedCredentials(broken).before_refresh(ours) is None


async def test_after_refresh_writes_back_then_claude_code_sees_it(creds: Path) -> None:
    linked = LinkedCredentials(creds)
    new = tokens("sk-ant-oat01-new", "sk-ant-ort01-new", time.time() + 28_800)
    await linked.after_refresh(new)
    assert read_credentials(creds).refresh == "sk-ant-ort01-new"
    # Our own write is not mistaken for a rotation by Claude Code.
    assert await linked.before_refresh(new) is None


async def test_after_refresh_does_not_resurrect_a_logged_out_claude_code(tmp_path: Path, caplog) -> None:
    path = tmp_path / "gone.json"
    await LinkedCredentials(path).after_refresh(tokens("sk-ant-oat01-new", "sk-ant-ort01-new", NOW))
    assert not path.exists() and "not recreating" in caplog.text


async def test_after_refresh_logs_without_raising_on_a_damaged_file(tmp_path: Path, caplog) -> None:
    path = tmp_path / "creds.json"
    path.write_text("{")
    await LinkedCredentials(path).after_refresh(tokens("sk-ant-oat01-new", "sk-ant-ort01-new", NOW))
    assert path.read_text() == "{" and "could not write refreshed tokens back" in caplog.text
    assert "sk-ant-ort01-new" not in caplog.text


def test_paths_expand_the_home_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / ".credentials.json").write_text(json.dumps(cc_doc()))
    assert read_credentials(claude_code.DEFAULT_CREDENTIALS_FILE).access == "sk-ant-oat01-cc"
    assert LinkedCredentials("~/.claude/.credentials.json").path == tmp_path / ".claude" / ".credentials.json"
    assert os.path.isabs(LinkedCredentials("~/x").path)
