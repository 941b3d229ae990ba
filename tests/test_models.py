"""`litellm claude models`: Anthropic's model list for the account, and the config check."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner

from litellm_claude_oauth import __version__
from litellm_claude_oauth.cli import claude
from litellm_claude_oauth.models import (
    ConfigFileError,
    ConfigModel,
    UpstreamError,
    UpstreamModel,
    compare,
    family,
    fetch_models,
    load_config,
)

from .conftest import FakeTokenEndpoint

API = "https://api.test"
MODELS_URL = f"{API}/v1/models"
CURRENT = ["claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-opus-5", "claude-haiku-4-5-20251001"]

CONFIG = """
model_list:
  - model_name: claude-opus
    litellm_params: {model: anthropic/claude-opus-5-5, api_key: claude-oauth}
  - model_name: claude-haiku-3.5
    litellm_params: {model: anthropic/claude-3-5-haiku-20241022, api_key: claude-oauth}
  - model_name: alice-sonnet
    litellm_params: {model: anthropic/claude-sonnet-4-20250514, api_key: "claude-oauth:alice"}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}
  - model_name: keyed-claude
    litellm_params: {model: anthropic/claude-opus-5, api_key: sk-ant-api03-x}
  - model_name: "claude-*"
    litellm_params: {model: "anthropic/claude-*", api_key: claude-oauth}
  - model_name: broken
  - just a string
litellm_settings:
  callbacks: [litellm_claude_oauth.hook.handler]
"""


def page(ids: list[str], has_more: bool = False) -> dict[str, Any]:
    data = [{"type": "model", "id": i, "display_name": i.replace("-", " ").title(), "created_at": "2026-10-07T00:00:00Z"}
            for i in ids]  # fmt: skip
    return {"data": data, "has_more": has_more, "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}


@pytest.fixture
def api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("CLAUDE_API_BASE", API)
    monkeypatch.chdir(tmp_path)  # away from the repository's own config.oauth.yaml
    with respx.mock(assert_all_called=False) as router:
        yield router


def logged_in(token: str = "sk-ant-oat01-models") -> None:
    doc = {"access_token": token, "expires_at": time.time() + 3600}
    result = CliRunner().invoke(claude, ["import", "-"], input=json.dumps(doc))
    assert result.exit_code == 0, result.output


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    return path


# -- the HTTP side -------------------------------------------------------------------


async def test_fetch_models_follows_pages_with_honest_oauth_headers() -> None:
    with respx.mock() as router:
        route = router.get(MODELS_URL).mock(
            side_effect=[httpx.Response(200, json=page(CURRENT[:2], has_more=True)),
                         httpx.Response(200, json=page(CURRENT[2:]))]
        )
        async with httpx.AsyncClient() as http:
            models = await fetch_models(http, API + "/", "sk-ant-oat01-tok")
    assert [m.id for m in models] == CURRENT
    first, second = (call.request for call in route.calls)
    assert first.url.params["limit"] == "1000" and "after_id" not in first.url.params
    assert second.url.params["after_id"] == CURRENT[1] and second.url.params["limit"] == "1000"
    for request in (first, second):
        assert request.headers["authorization"] == "Bearer sk-ant-oat01-tok"
        assert "x-api-key" not in request.headers
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert "oauth-2025-04-20" in request.headers["anthropic-beta"]
        assert request.headers["user-agent"] == f"litellm-claude-oauth/{__version__}"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(401, json={"type": "error", "error": {"type": "authentication_error",
                                                              "message": "Invalid bearer token"}}),
         "answered 401: Invalid bearer token"),
        (httpx.Response(403, json={"type": "error", "error": {"type": "permission_error",
                                                              "message": "OAuth token does not meet\nscope"}}),
         "answered 403: OAuth token does not meet scope"),
        (httpx.Response(200, text="<html>"), "not a model list"),
        (httpx.Response(200, json={"data": [{"no_id": 1}]}), "not a model list"),
        (httpx.ConnectError("refused"), "cannot reach https://api.test/v1/models: ConnectError"),
    ],
)  # fmt: skip
async def test_fetch_models_errors_are_one_line(response: Any, message: str) -> None:
    with respx.mock() as router:
        router.get(MODELS_URL).mock(side_effect=[response])
        async with httpx.AsyncClient() as http:
            with pytest.raises(UpstreamError) as info:
                await fetch_models(http, API, "sk-ant-oat01-tok")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "sk-ant-oat01-tok" not in str(info.value)


async def test_fetch_models_stops_an_endless_has_more() -> None:
    with respx.mock() as router:
        route = router.get(MODELS_URL).mock(return_value=httpx.Response(200, json=page(["claude-x"], has_more=True)))
        async with httpx.AsyncClient() as http:
            with pytest.raises(UpstreamError, match="kept saying has_more"):
                await fetch_models(http, API, "sk-ant-oat01-tok")
    assert route.call_count == 50


# -- the config side -----------------------------------------------------------------


def test_load_config_keeps_only_oauth_deployments(tmp_path: Path) -> None:
    # …and not a wildcard: it passes any id through, there is no one id to check.
    assert load_config(write_config(tmp_path)) == [
        ConfigModel(model_name="claude-opus", upstream_id="claude-opus-5-5"),
        ConfigModel(model_name="claude-haiku-3.5", upstream_id="claude-3-5-haiku-20241022"),
        ConfigModel(model_name="alice-sonnet", upstream_id="claude-sonnet-4-20250514", account="alice"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read the proxy config"),
        ("model_list: [\n  - {a: 1\n", "is not valid YAML (line"),
        ("general_settings: {}\n", "has no model_list"),
        ("- 1\n- 2\n", "has no model_list"),
    ],
)
def test_load_config_errors(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "proxy.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigFileError, match=message.replace("(", r"\(")):
        load_config(path)


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [("claude-3-5-haiku-20241022", "haiku"), ("claude-haiku-5-5", "haiku"), ("claude-3-7-sonnet-20250219", "sonnet"),
     ("claude-opus-4-1-20250805", "opus"), ("claude-fable-5-1", "fable"), ("gpt-4o", "gpt-4o")],
)  # fmt: skip
def test_family(model_id: str, expected: str) -> None:
    assert family(model_id) == expected


def test_compare_flags_retired_ids_and_suggests_the_newest_of_the_family() -> None:
    upstream = [UpstreamModel(id=i) for i in CURRENT]
    config = [
        ConfigModel(model_name="a", upstream_id="claude-opus-5-5"),
        ConfigModel(model_name="b", upstream_id="claude-3-5-haiku-20241022"),
        ConfigModel(model_name="c", upstream_id="claude-mythos-5"),
    ]
    checks = compare(config, upstream)
    assert [(c.served, c.suggestion) for c in checks] == [(True, None), (False, "claude-haiku-5-5"), (False, None)]


# -- the command ---------------------------------------------------------------------


def test_models_command_flags_unserved_config_entries(api, tmp_path: Path) -> None:
    logged_in()
    api.get(MODELS_URL).mock(return_value=httpx.Response(200, json=page(CURRENT)))
    result = CliRunner().invoke(claude, ["models", "--config", str(write_config(tmp_path))])
    assert result.exit_code == 1, result.output
    assert "claude-sonnet-5-5" in result.output and "Models for account 'default'" in result.output
    assert re.search(r"claude-3-5-haiku-20241022 +│ ❌ +│ claude-haiku-5-5", result.output)
    assert "Deployments of other accounts (alice) were checked against 'default''s list" in result.output
    assert "2 deployment(s) name models this account does not get: claude-3-5-haiku-20241022, " \
           "claude-sonnet-4-20250514" in result.output  # fmt: skip


def test_models_command_json(api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logged_in()
    api.get(MODELS_URL).mock(return_value=httpx.Response(200, json=page(CURRENT)))
    monkeypatch.setenv("LITELLM_CONFIG", str(write_config(tmp_path)))
    result = CliRunner().invoke(claude, ["models", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert [m["id"] for m in data["models"]] == CURRENT and data["account"] == "default"
    assert data["config_path"] == str(tmp_path / "proxy.yaml")
    assert {c["upstream_id"]: c["served"] for c in data["config"]} == {
        "claude-opus-5-5": True, "claude-3-5-haiku-20241022": False, "claude-sonnet-4-20250514": False,
    }  # fmt: skip
    assert [c["model_name"] for c in data["unserved"]] == ["claude-haiku-3.5", "alice-sonnet"]


def test_models_command_all_served_exits_0(api, tmp_path: Path) -> None:
    logged_in()
    api.get(MODELS_URL).mock(return_value=httpx.Response(200, json=page(CURRENT)))
    config = write_config(tmp_path, "model_list:\n  - model_name: o\n    litellm_params: "
                                    "{model: anthropic/claude-opus-5, api_key: claude-oauth}\n")  # fmt: skip
    result = CliRunner().invoke(claude, ["models", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "All 1 claude-oauth deployments name models this account gets" in result.output


def test_models_command_without_a_config_just_lists(api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logged_in()  # the api fixture runs this in tmp_path: no ./config.oauth.yaml here
    api.get(MODELS_URL).mock(return_value=httpx.Response(200, json=page(CURRENT)))
    result = CliRunner().invoke(claude, ["models"])
    assert result.exit_code == 0, result.output
    assert "claude-opus-5-5" in result.output and "No proxy config compared" in result.output


def test_models_command_uses_the_default_config_in_the_current_directory(api, tmp_path: Path, monkeypatch) -> None:
    logged_in()
    (tmp_path / "config.oauth.yaml").write_text(CONFIG)  # the api fixture's working directory
    api.get(MODELS_URL).mock(return_value=httpx.Response(200, json=page(CURRENT)))
    result = CliRunner().invoke(claude, ["models", "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["config_path"] == "config.oauth.yaml"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--config", "/nonexistent/proxy.yaml"), "cannot read the proxy config /nonexistent/proxy.yaml"),
        (("--account", "nobody"), "No Claude account is logged in for 'nobody'"),
    ],
)
def test_models_command_errors(api, args: tuple[str, ...], message: str) -> None:
    logged_in()
    api.get(MODELS_URL).mock(return_value=httpx.Response(200, json=page(CURRENT)))
    result = CliRunner().invoke(claude, ["models", *args])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_models_command_refreshes_once_on_401(api, token_endpoint: FakeTokenEndpoint, tmp_path: Path) -> None:
    runner = CliRunner()
    start = json.loads(runner.invoke(claude, ["login", "--json"]).output)
    assert runner.invoke(claude, ["callback", token_endpoint.authorize(start["authorization_url"])]).exit_code == 0
    revoked = httpx.Response(401, json={"type": "error", "error": {"type": "authentication_error",
                                                                   "message": "Invalid bearer token"}})  # fmt: skip
    route = api.get(MODELS_URL).mock(side_effect=[revoked, httpx.Response(200, json=page(CURRENT))])
    result = runner.invoke(claude, ["models", "--json"])
    assert result.exit_code == 0, result.output
    assert token_endpoint.refreshes == 1
    tokens = [call.request.headers["authorization"] for call in route.calls]
    assert tokens == ["Bearer sk-ant-oat01-access1", "Bearer sk-ant-oat01-access2"]


# -- against the fake Anthropic ------------------------------------------------------


def test_models_command_against_the_fake_anthropic(env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from litellm_claude_oauth.tokens import TokenSet
    from tests.fake_anthropic import FakeAnthropic

    with FakeAnthropic(port=0) as fake:
        monkeypatch.setenv("CLAUDE_API_BASE", fake.url)
        tokens = TokenSet.from_token_response(fake.issue_tokens("models@example.com"))
        served = httpx.get(f"{fake.url}/v1/models", headers={"Authorization": f"Bearer {tokens.access}",
                                                             "anthropic-version": "2023-06-01",
                                                             "anthropic-beta": "oauth-2025-04-20"})  # fmt: skip
        assert served.status_code == 200, served.text
        logged_in(tokens.access)
        fake_ids = [m["id"] for m in served.json()["data"]]
        config = write_config(tmp_path, "model_list:\n" + "".join(
            f"  - model_name: m{i}\n    litellm_params: {{model: anthropic/{mid}, api_key: claude-oauth}}\n"
            for i, mid in enumerate([fake_ids[0], "claude-3-5-haiku-20241022"])))  # fmt: skip
        result = CliRunner().invoke(claude, ["models", "--json", "--config", str(config)])
    data = json.loads(result.stdout)
    assert fake_ids[0] in [m["id"] for m in data["models"]]
    # The fake serves today's ids only: the retired Haiku 3.5 id is flagged.
    assert "claude-3-5-haiku-20241022" not in fake_ids
    assert [c["served"] for c in data["config"]] == [True, False] and result.exit_code == 1
