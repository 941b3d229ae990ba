"""`litellm claude doctor`: every check, its verdict and its fix."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner
from pydantic import SecretStr

from litellm_claude_oauth import __version__
from litellm_claude_oauth.cli import claude
from litellm_claude_oauth.doctor import (
    check_identity_prompt,
    check_redis,
    check_refresh_token,
    classify_probe,
    probe_body,
    probe_targets,
)
from litellm_claude_oauth.models import ConfigModel, UpstreamModel
from litellm_claude_oauth.settings import DEFAULT_SYSTEM_PROMPT, Settings
from litellm_claude_oauth.tokens import TokenSet

from .conftest import KEY_B, FakeTokenEndpoint

API = "https://api.test"
CURRENT = ["claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-opus-5"]
CONFIG = """
model_list:
  - model_name: claude-opus
    litellm_params: {model: anthropic/claude-opus-5-5, api_key: claude-oauth}
  - model_name: claude-opus-5
    litellm_params: {model: anthropic/claude-opus-5, api_key: claude-oauth}
  - model_name: claude-haiku
    litellm_params: {model: anthropic/claude-haiku-5-5, api_key: claude-oauth}
"""
NOW = 1_800_000_000.0


def api_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"type": "error", "error": {"type": kind, "message": message}}, headers=headers)


def ok_message() -> httpx.Response:
    return httpx.Response(200, json={"id": "msg_1", "type": "message", "role": "assistant",
                                     "content": [{"type": "text", "text": "Hi"}]})  # fmt: skip


def models_page(ids: list[str]) -> httpx.Response:
    return httpx.Response(200, json={"data": [{"id": i, "type": "model"} for i in ids], "has_more": False})


def import_tokens(**fields: Any) -> None:
    doc = {"access_token": "sk-ant-oat01-doc", "refresh_token": "sk-ant-ort01-doc", "expires_at": time.time() + 3600,
           "refresh_expires_at": time.time() + 20 * 86400, **fields}  # fmt: skip
    result = CliRunner().invoke(claude, ["import", "-", "--force"], input=json.dumps(doc))
    assert result.exit_code == 0, result.output


@pytest.fixture
def api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("CLAUDE_API_BASE", API)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.oauth.yaml").write_text(CONFIG)
    with respx.mock(assert_all_called=False) as router:
        yield router


def doctor(*args: str) -> tuple[int, str, dict[str, Any] | None]:
    result = CliRunner().invoke(claude, ["doctor", *args])
    data = json.loads(result.stdout) if "--json" in args else None
    return result.exit_code, result.output, data


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in data["checks"]}


# -- the probe ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "status", "words"),
    [
        (ok_message(), "pass", "claude-opus-5-5: ok (200)"),
        (api_error(429, "rate_limit_error", "Error"), "fail", "429 'Error': the identity gate refused this model family (headerless 429)"),
        (api_error(429, "rate_limit_error", "This request would exceed your account's rate limit.",
                   {"retry-after": "60", "anthropic-ratelimit-unified-representative-claim": "five_hour",
                    "anthropic-ratelimit-unified-reset": str(int(NOW))}),
         "warn", "rate limited (five_hour), resets 2027-01-15 08:00 UTC"),
        (api_error(400, "invalid_request_error",
                   "You're out of extra usage. Add more at claude.ai/settings/usage and keep going."),
         "fail", "bills this client as extra usage"),
        (api_error(400, "invalid_request_error", "This credential is only authorized for use with Claude Code and "
                   "cannot be used for other API requests."), "fail", "the identity line was not accepted"),
        (api_error(401, "authentication_error", "Invalid bearer token"), "fail", "the token was refused"),
        (api_error(403, "permission_error", "OAuth token does not meet scope requirement"), "fail", "lacks a scope this call needs"),
        (api_error(404, "not_found_error", "model: claude-opus-5-5"), "fail", "no such model for this account"),
        (api_error(529, "overloaded_error", "Overloaded"), "warn", "Anthropic is overloaded"),
        (api_error(500, "api_error", "Internal server error"), "warn", "Anthropic is failing"),
        (api_error(429, "rate_limit_error", "Rate limited"), "warn", "throttling requests"),
        (api_error(403, "permission_error", "OAuth authentication is currently not allowed for this organization."),
         "fail", "refuses this account's organization"),
        (api_error(400, "invalid_request_error", "Third-party apps now draw from your extra usage, not your plan "
                   "limits."), "fail", "bills this client as extra usage"),
        (api_error(418, "teapot", "short and stout"), "fail", "418 'short and stout'"),
    ],
)  # fmt: skip
def test_classify_probe(response: httpx.Response, status: str, words: str) -> None:
    check = classify_probe("claude-opus-5-5", response)
    assert check.status == status and words in check.detail and check.name == "probe opus"
    assert "\n" not in check.detail
    if status in ("fail", "warn") and response.status_code != 418:
        assert check.fix
    assert "Bearer" not in check.detail


def test_probe_body_is_one_token_with_the_identity_block_alone() -> None:
    body = probe_body("claude-sonnet-5-5")
    assert body["max_tokens"] == 1 and body["model"] == "claude-sonnet-5-5"
    assert body["system"] == [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."}]


def test_probe_targets_pick_the_newest_served_id_per_family() -> None:
    config = [ConfigModel(model_name=n, upstream_id=i) for n, i in [
        ("a", "claude-opus-5"), ("b", "claude-opus-5-5"), ("c", "claude-3-5-haiku-20241022"), ("d", "claude-sonnet-5-5")]]
    upstream = [UpstreamModel(id=i) for i in CURRENT]
    assert probe_targets(config, upstream) == {"opus": "claude-opus-5-5", "haiku": None, "sonnet": "claude-sonnet-5-5"}
    # Without Anthropic's list: the first id of each family in the config.
    assert probe_targets(config, None) == {
        "opus": "claude-opus-5", "haiku": "claude-3-5-haiku-20241022", "sonnet": "claude-sonnet-5-5"}


# -- local checks ---------------------------------------------------------------------


def tokens(refresh: str | None = "sk-ant-ort01-r", **fields: Any) -> TokenSet:
    base: dict[str, Any] = {"expires_at": NOW + 3600, "obtained_at": NOW - 60}
    return TokenSet(access_token=SecretStr("sk-ant-oat01-a"), refresh_token=SecretStr(refresh) if refresh else None,
                    **{**base, **fields})  # fmt: skip


@pytest.mark.parametrize(
    ("token", "status", "words"),
    [
        (tokens(refresh_expires_at=NOW + 20 * 86400), "pass", "ends in 20.0 days"),
        (tokens(refresh_expires_at=NOW + 2 * 86400), "warn", "ends in 2.0 days"),
        (tokens(refresh_expires_at=NOW - 3600), "fail", "ended 1.0 hours ago"),
        # Lifetime not reported: the default (30 days from obtained_at) is assumed.
        (tokens(), "pass", "ends in 30.0 days"),
        (tokens(refresh=None, source="setup-token", expires_at=NOW + 300 * 86400), "pass", "cannot be renewed"),
        (tokens(refresh=None, source="setup-token", expires_at=NOW + 86400), "warn", "cannot be renewed"),
    ],
)
def test_check_refresh_token(token: TokenSet, status: str, words: str) -> None:
    check = check_refresh_token(token, Settings(), "default", now=NOW)
    assert check.status == status and words in check.detail
    if status != "pass":
        assert "litellm claude login" in (check.fix or "")


def test_check_refresh_token_honours_refresh_warning_days() -> None:
    token = tokens(refresh_expires_at=NOW + 5 * 86400)
    assert check_refresh_token(token, Settings(), "default", now=NOW).status == "pass"
    assert check_refresh_token(token, Settings(refresh_warning_days=7), "bob", now=NOW).status == "warn"
    assert "--account bob" in (check_refresh_token(token, Settings(refresh_warning_days=7), "bob", now=NOW).fix or "")


def test_check_identity_prompt() -> None:
    assert check_identity_prompt(Settings()).status == "pass"
    changed = check_identity_prompt(Settings(system_prompt="You are a pirate."))
    assert changed.status == "warn" and "CLAUDE_CODE_SYSTEM_PROMPT" in (changed.fix or "")


async def test_check_redis_configured_and_unreachable() -> None:
    assert (await check_redis(Settings())).status == "skip"
    dead = Settings.model_validate({"redis": {"url": "redis://:hunter2secret@127.0.0.1:1/0"}})
    check = await check_redis(dead)
    assert check.status == "fail" and "127.0.0.1:1" in check.detail and "hunter2secret" not in check.detail
    assert check.fix


@pytest.mark.redis
async def test_check_redis_reachable() -> None:
    url = os.environ.get("CLAUDE_OAUTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    check = await check_redis(Settings.model_validate({"redis": {"url": url}}))
    if check.status == "fail":
        pytest.skip(f"no Redis for tests: {check.detail}")
    assert check.status == "pass" and "answers" in check.detail


# -- the command ----------------------------------------------------------------------


def test_doctor_all_good(api) -> None:
    import_tokens()
    api.get(f"{API}/v1/models").mock(return_value=models_page(CURRENT))
    messages = api.post(f"{API}/v1/messages").mock(return_value=ok_message())
    code, output, _ = doctor()
    assert code == 0, output
    assert "✅ probe opus: claude-opus-5-5: ok (200)" in output and "✅ probe haiku: claude-haiku-5-5: ok (200)" in output
    assert "0 failed" in output and "fix:" not in output
    # One request per family, the newest served id, sent the way the proxy sends it.
    assert sorted(json.loads(c.request.content)["model"] for c in messages.calls) == ["claude-haiku-5-5", "claude-opus-5-5"]
    for call in messages.calls:
        h = call.request.headers
        assert h["authorization"] == "Bearer sk-ant-oat01-doc" and "x-api-key" not in h
        assert h["user-agent"] == f"litellm-claude-oauth/{__version__}" and "oauth-2025-04-20" in h["anthropic-beta"]
        assert not [k for k in h if k.startswith(("x-stainless", "x-app"))]
        body = json.loads(call.request.content)
        assert body["max_tokens"] == 1 and body["system"][0]["text"] == DEFAULT_SYSTEM_PROMPT


def test_doctor_reports_each_upstream_answer_with_its_fix(api) -> None:
    import_tokens()
    api.get(f"{API}/v1/models").mock(return_value=models_page(["claude-haiku-5-5", "claude-opus-5"]))

    def answer(request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        return api_error(429, "rate_limit_error", "Error") if "opus" in model else ok_message()

    api.post(f"{API}/v1/messages").mock(side_effect=answer)
    code, output, _ = doctor()
    assert code == 1
    assert "❌ config models: 1 of 3 claude-oauth deployments in config.oauth.yaml name models this account does " \
           "not get" in output  # fmt: skip
    assert "claude-opus-5-5 → claude-opus-5" in output
    assert "❌ probe opus: claude-opus-5: 429 'Error': the identity gate refused this model family" in output
    lines = output.splitlines()
    assert lines[lines.index(next(line for line in lines if "probe opus" in line)) + 1].startswith("   fix: ")


def test_doctor_json(api) -> None:
    import_tokens(refresh_expires_at=time.time() + 86400)
    api.get(f"{API}/v1/models").mock(return_value=models_page(CURRENT))
    api.post(f"{API}/v1/messages").mock(return_value=ok_message())
    code, _, data = doctor("--json")
    assert code == 0 and data is not None and data["ok"] is True and data["account"] == "default"
    checks = by_name(data)
    assert checks["refresh token"]["status"] == "warn" and "litellm claude login" in checks["refresh token"]["fix"]
    assert checks["encryption"]["status"] == "pass" and checks["redis"]["status"] == "skip"
    assert checks["models"]["detail"] == "4 models available to this account"


def test_doctor_not_logged_in_skips_anthropic(api) -> None:
    route = api.get(f"{API}/v1/models").mock(return_value=models_page(CURRENT))
    code, _, data = doctor("--json", "--account", "bob")
    assert code == 1 and data is not None
    checks = by_name(data)
    assert checks["login"]["status"] == "fail" and checks["login"]["fix"] == "run `litellm claude login --account bob`"
    assert checks["anthropic"]["status"] == "skip" and route.call_count == 0


def test_doctor_wrong_key(api, monkeypatch: pytest.MonkeyPatch) -> None:
    import_tokens()
    monkeypatch.setenv("CLAUDE_TOKEN_ENCRYPTION_KEY", KEY_B)
    code, output, _ = doctor()
    assert code == 1
    assert "❌ store:" in output and "CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD" in output
    assert "➖ anthropic: no usable access token" in output


def test_doctor_warns_about_plaintext(api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAUDE_TOKEN_ENCRYPTION_KEY")
    import_tokens()
    api.get(f"{API}/v1/models").mock(return_value=models_page(CURRENT))
    api.post(f"{API}/v1/messages").mock(return_value=ok_message())
    code, output, _ = doctor()
    assert code == 0 and "⚠️  encryption: tokens are stored in clear" in output and "openssl rand -hex 32" in output


def test_doctor_refreshes_an_expired_access_token(api, token_endpoint: FakeTokenEndpoint) -> None:
    runner = CliRunner()
    start = json.loads(runner.invoke(claude, ["login", "--json"]).output)
    assert runner.invoke(claude, ["callback", token_endpoint.authorize(start["authorization_url"])]).exit_code == 0
    shown = json.loads(runner.invoke(claude, ["export", "--show-tokens"]).output)
    shown["expires_at"] = time.time() - 10
    assert runner.invoke(claude, ["import", "-", "--force"], input=json.dumps(shown)).exit_code == 0
    api.get(f"{API}/v1/models").mock(return_value=models_page(CURRENT))
    api.post(f"{API}/v1/messages").mock(return_value=ok_message())
    code, output, _ = doctor()
    assert code == 0, output
    assert "✅ access token: valid for" in output and "(refreshed just now)" in output
    assert token_endpoint.refreshes == 1


def test_doctor_without_config_lists_models_but_probes_nothing(api, tmp_path: Path) -> None:
    (tmp_path / "config.oauth.yaml").unlink()
    import_tokens()
    api.get(f"{API}/v1/models").mock(return_value=models_page(CURRENT))
    messages = api.post(f"{API}/v1/messages").mock(return_value=ok_message())
    code, output, _ = doctor()
    assert code == 0 and "➖ config: no proxy config here" in output and messages.call_count == 0


def test_doctor_bad_config_is_a_failure_line(api, tmp_path: Path) -> None:
    import_tokens()
    api.get(f"{API}/v1/models").mock(return_value=models_page(CURRENT))
    code, output, _ = doctor("--config", str(tmp_path / "nope.yaml"))
    assert code == 1 and "❌ config: cannot read the proxy config" in output


# -- against the fake Anthropic -------------------------------------------------------


def test_doctor_against_the_fake_anthropic(env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fake_anthropic import FakeAnthropic

    with FakeAnthropic(port=0) as fake:
        fake.require_claude_code_system = True  # the identity gate, as for Sonnet/Opus
        monkeypatch.setenv("CLAUDE_API_BASE", fake.url)
        monkeypatch.setenv("CLAUDE_OAUTH_TOKEN_URL", fake.token_url)
        issued = TokenSet.from_token_response(fake.issue_tokens("doctor@example.com"))
        import_tokens(access_token=issued.access, refresh_token=issued.refresh, expires_at=issued.expires_at)
        config = tmp_path / "proxy.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: s\n    litellm_params: {model: anthropic/claude-sonnet-5-5, api_key: claude-oauth}\n"
            "  - model_name: h\n    litellm_params: {model: anthropic/claude-haiku-5-5, api_key: claude-oauth}\n"
        )
        fake.reset_records()
        code, _, data = doctor("--json", "--config", str(config))
        probes = [r for r in fake.messages_requests()]
    assert data is not None
    checks = by_name(data)
    assert checks["probe sonnet"]["status"] == "pass" and checks["probe haiku"]["status"] == "pass"
    assert sorted(r.body["model"] for r in probes) == ["claude-haiku-5-5", "claude-sonnet-5-5"]
    for request in probes:
        assert request.body["max_tokens"] == 1 and request.body["system"][0]["text"] == DEFAULT_SYSTEM_PROMPT
        assert {k.lower(): v for k, v in request.headers.items()}["user-agent"].startswith("litellm-claude-oauth/")
    assert checks["models"]["status"] == "pass" and checks["config models"]["status"] == "pass"
    assert code == 0 and data["ok"] is True


def _linked_import(creds: Path, refresh: str = "sk-ant-ort01-doc") -> None:
    creds.write_text(json.dumps({"claudeAiOauth": {
        "accessToken": "sk-ant-oat01-doc", "refreshToken": refresh, "expiresAt": int((time.time() + 3600) * 1000)}}))
    result = CliRunner().invoke(claude, ["import", str(creds), "--linked"])
    assert result.exit_code == 0, result.output


def test_doctor_checks_a_linked_claude_code_file(api, tmp_path: Path) -> None:
    (tmp_path / "config.oauth.yaml").unlink()
    api.get(f"{API}/v1/models").mock(return_value=models_page(CURRENT))
    creds = tmp_path / "cc" / ".credentials.json"
    creds.parent.mkdir()
    _linked_import(creds)
    code, _, data = doctor("--json")
    assert code == 0 and data is not None
    assert by_name(data)["linked credentials"] == {
        "name": "linked credentials", "status": "pass", "detail": f"{creds.resolve()} holds the same grant as the proxy",
        "fix": None}  # fmt: skip

    # Claude Code rotated since: still fine, the proxy adopts at its next refresh.
    doc = json.loads(creds.read_text())
    doc["claudeAiOauth"]["refreshToken"] = "sk-ant-ort01-rotated"
    creds.write_text(json.dumps(doc))
    assert "adopts them at its next refresh" in by_name(doctor("--json")[2] or {})["linked credentials"]["detail"]

    creds.unlink()
    code, output, _ = doctor()
    assert code == 1 and "❌ linked credentials:" in output and "log Claude Code in again" in output


def test_doctor_fails_a_linked_file_it_cannot_write(api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.oauth.yaml").unlink()
    api.get(f"{API}/v1/models").mock(return_value=models_page(CURRENT))
    creds = tmp_path / ".credentials.json"
    _linked_import(creds)
    # Root can write anything, so ask os.access the way an unprivileged proxy user would be answered.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK else real_access(p, mode))
    code, output, _ = doctor()
    assert code == 1 and "not writable by this user" in output and "refreshed tokens are written back" in output
