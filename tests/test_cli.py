import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from litellm_claude_oauth.cli import claude, main

from .conftest import FakeTokenEndpoint


@pytest.fixture
def run(env: dict[str, str]):
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(claude, list(args), input=input, catch_exceptions=False)

    return invoke


def login_json(run) -> dict:
    result = run("login", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_login_then_callback_in_separate_invocations(run, token_endpoint: FakeTokenEndpoint) -> None:
    result = run("login", "--no-browser", "--no-code-prompt")
    assert result.exit_code == 0
    assert "🔐 Starting Claude OAuth authentication..." in result.output
    url = next(line for line in result.output.splitlines() if line.startswith("https://auth.test/oauth/authorize?"))
    assert "litellm claude callback <CODE>" in result.output

    pasted = token_endpoint.authorize(url)  # the person authorizes in a browser
    result = run("callback", pasted)
    assert result.exit_code == 0, result.output
    assert "Logged in to Claude as person@example.com" in result.output

    result = run("status")
    assert result.exit_code == 0
    assert "✅ Valid" in result.output and re.search(r"Expires in: (60 minutes|1.0 hours)", result.output)
    assert "person@example.com" in result.output and "Encryption: on" in result.output


def test_callback_accepts_bare_code_and_full_url(run, token_endpoint: FakeTokenEndpoint) -> None:
    code, _, state = token_endpoint.authorize(login_json(run)["authorization_url"]).partition("#")
    assert run("callback", code).exit_code == 0
    code, _, state = token_endpoint.authorize(login_json(run)["authorization_url"]).partition("#")
    url = f"https://console.anthropic.com/oauth/code/callback?code={code}&state={state}"
    assert run("callback", url).exit_code == 0


def test_login_opens_browser_and_takes_the_pasted_code(env, token_endpoint: FakeTokenEndpoint, monkeypatch) -> None:
    import litellm_claude_oauth.cli as cli

    opened: list[str] = []
    monkeypatch.setattr(cli, "_open_browser", lambda url: opened.append(url) or True)
    # The person authorizes in the browser that opened, then pastes the code at the prompt.
    monkeypatch.setattr(cli.click, "prompt", lambda *a, **k: token_endpoint.authorize(opened[0]))
    result = CliRunner().invoke(claude, ["login", "--code-prompt"])
    assert result.exit_code == 0, result.output
    assert "Opening browser" in result.output and "Logged in to Claude as person@example.com" in result.output


def test_login_prompt_can_be_left_empty(run) -> None:
    result = run("login", "--no-browser", "--code-prompt", input="\n")
    assert result.exit_code == 0 and "Finish later with: litellm claude callback <CODE>" in result.output


def test_status_json_and_exit_code_when_logged_out(run) -> None:
    result = run("status", "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["accounts"][0]["logged_in"] is False and data["accounts"][0]["encrypted"] is True


def test_status_lists_every_account(run, token_endpoint: FakeTokenEndpoint) -> None:
    for account in ("alice", "bob"):
        start = json.loads(run("login", "--json", "--account", account).output)
        assert run("callback", token_endpoint.authorize(start["authorization_url"])).exit_code == 0
    data = json.loads(run("status", "--json").output)
    assert [a["account"] for a in data["accounts"]] == ["alice", "bob"]
    assert all(a["valid"] for a in data["accounts"])


def test_refresh_and_logout(run, token_endpoint: FakeTokenEndpoint) -> None:
    assert run("callback", token_endpoint.authorize(login_json(run)["authorization_url"])).exit_code == 0
    result = run("refresh")
    assert result.exit_code == 0 and "Token refreshed" in result.output
    assert token_endpoint.refreshes == 1
    assert "Logged out: default" in run("logout").output
    assert run("status").exit_code == 1


def test_export_redacts_unless_asked(run, token_endpoint: FakeTokenEndpoint) -> None:
    assert run("callback", token_endpoint.authorize(login_json(run)["authorization_url"])).exit_code == 0
    redacted = run("export")
    assert redacted.exit_code == 0
    assert "sk-ant-oat01-access1" not in redacted.output and "sk-ant-ort01-refresh1" not in redacted.output
    shown = json.loads(run("export", "--show-tokens").output)
    assert shown["access_token"] == "sk-ant-oat01-access1" and shown["refresh_token"] == "sk-ant-ort01-refresh1"
    assert run("export", "--format", "claude-code").exit_code == 1


@pytest.mark.parametrize("access", ["sk-ant-oat01-x…abcd", "****", "not-a-token"])
def test_a_redacted_export_is_never_imported_as_a_token(run, tmp_path: Path, access: str) -> None:
    """Audit L13: a short token redacts to "****", which used to be imported as if it were one."""
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"access_token": access, "refresh_token": "****", "expires_at": 1e10}))
    result = run("import", str(export))
    assert result.exit_code != 0 and "redacted" in result.output
    assert run("status").exit_code == 1  # nothing was stored


def test_import_claude_code_credentials(run, tmp_path: Path) -> None:
    creds = tmp_path / ".credentials.json"
    expires_ms = int((time.time() + 7200) * 1000)
    creds.write_text(json.dumps({"claudeAiOauth": {
        "accessToken": "sk-ant-oat01-cc", "refreshToken": "sk-ant-ort01-cc", "expiresAt": expires_ms,
        "scopes": ["user:inference", "user:profile"], "subscriptionType": "max",
    }}))
    result = run("import", str(creds))
    assert result.exit_code == 0, result.output
    data = json.loads(run("export", "--show-tokens").output)
    assert data["access_token"] == "sk-ant-oat01-cc" and data["refresh_token"] == "sk-ant-ort01-cc"
    assert abs(data["expires_at"] - expires_ms / 1000) < 1
    # Round trip through Claude Code's format.
    out = run("export", "--format", "claude-code", "--show-tokens").output
    assert json.loads(out)["claudeAiOauth"]["expiresAt"] == expires_ms
    assert "already has tokens" in run("import", str(creds)).output
    assert run("import", str(creds), "--force").exit_code == 0


def test_import_setup_token_from_env(run, monkeypatch) -> None:
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-setup")
    result = run("import", "--account", "ci")
    assert result.exit_code == 0 and "No refresh token" in result.output
    data = json.loads(run("status", "--json", "--account", "ci").output)["accounts"][0]
    assert data["valid"] and data["source"] == "setup-token" and data["expires_in_seconds"] > 360 * 86400


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("callback", "nonsense-code"), "no login in progress"),
        (("callback", "abc#unknown-state"), "unknown or was already used"),
        (("refresh",), "No Claude account is logged in"),
        (("import", "/nonexistent.json"), "cannot read /nonexistent.json"),
        (("import", "--setup-token"), "starts with sk-ant-oat"),
        (("import", "--setup-token", "-"), "starts with sk-ant-oat"),
        (("export", "--format", "claude-code"), "add --show-tokens to confirm"),
    ],
)
def test_errors_are_one_line_and_nonzero(run, args: tuple[str, ...], message: str) -> None:
    result = run(*args, input="not-a-token\n")
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_import_setup_token_from_stdin_by_default(run) -> None:
    result = run("import", "--setup-token", "--account", "ci", input="sk-ant-oat01-fromstdin\n")
    assert result.exit_code == 0, result.output
    assert "shell history" not in result.output
    shown = json.loads(run("export", "--show-tokens", "--account", "ci").output)
    assert shown["access_token"] == "sk-ant-oat01-fromstdin" and shown["source"] == "setup-token"


def test_import_setup_token_from_claude_setup_token_env(run, monkeypatch) -> None:
    monkeypatch.setenv("CLAUDE_SETUP_TOKEN", "sk-ant-oat01-fromenv")
    result = run("import", "--setup-token", input="")
    assert result.exit_code == 0 and "from CLAUDE_SETUP_TOKEN" in result.output
    assert json.loads(run("export", "--show-tokens").output)["access_token"] == "sk-ant-oat01-fromenv"


def test_import_setup_token_on_argv_still_works_with_a_warning(env) -> None:
    result = CliRunner().invoke(claude, ["import", "--setup-token", "sk-ant-oat01-argv"])
    assert result.exit_code == 0, result.output
    assert "shell history" in result.stderr and "shell history" not in result.stdout
    assert "sk-ant-oat01-argv" not in result.output


def _claude_code_file(tmp_path: Path, refresh: str = "sk-ant-ort01-cc") -> Path:
    creds = tmp_path / ".credentials.json"
    creds.write_text(json.dumps({"claudeAiOauth": {
        "accessToken": "sk-ant-oat01-cc", "refreshToken": refresh, "expiresAt": int((time.time() + 7200) * 1000),
        "scopes": ["user:inference"], "subscriptionType": "max",
    }, "mcpOAuth": {}}))
    return creds


def test_import_from_claude_code_warns_about_the_shared_refresh_token(env, tmp_path: Path) -> None:
    result = CliRunner().invoke(claude, ["import", str(_claude_code_file(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "single use" in result.stderr and "litellm claude login" in result.stderr and "--linked" in result.stderr


def test_import_linked_records_the_link_and_does_not_warn(env, tmp_path: Path) -> None:
    creds = _claude_code_file(tmp_path)
    result = CliRunner().invoke(claude, ["import", str(creds), "--linked"])
    assert result.exit_code == 0, result.output
    assert "Linked to" in result.stdout and "single use" not in result.stderr
    status = json.loads(CliRunner().invoke(claude, ["status", "--json"]).stdout)["accounts"][0]
    assert status["linked_credentials"] == str(creds.resolve())
    assert "Linked to Claude Code" in CliRunner().invoke(claude, ["status"]).stdout


def _write_claude_code(path: Path, grant: dict, expires_at: float) -> None:
    doc = json.loads(path.read_text()) if path.exists() else {"mcpOAuth": {"kept": True}}
    doc["claudeAiOauth"] = {"accessToken": grant["access_token"], "refreshToken": grant["refresh_token"],
                            "expiresAt": int(expires_at * 1000), "scopes": ["user:inference"]}
    path.write_text(json.dumps(doc))


def test_linked_account_follows_claude_code_rotations(run, token_endpoint: FakeTokenEndpoint, tmp_path: Path) -> None:
    creds = tmp_path / ".credentials.json"
    first = token_endpoint.issue()
    _write_claude_code(creds, first, time.time() - 10)
    assert run("import", str(creds), "--linked").exit_code == 0

    # Claude Code refreshes on its own: refresh token 1 dies, 2 is live, and it is in the file.
    token_endpoint.live_refresh.discard(first["refresh_token"])
    second = token_endpoint.issue()
    _write_claude_code(creds, second, time.time() - 10)

    result = run("refresh")
    assert result.exit_code == 0, result.output
    used = [b["refresh_token"] for b in token_endpoint.bodies if b.get("grant_type") == "refresh_token"]
    assert used == [second["refresh_token"]]  # not the dead one the proxy imported
    stored = json.loads(run("export", "--show-tokens").output)
    written = json.loads(creds.read_text())
    assert written["claudeAiOauth"]["refreshToken"] == stored["refresh_token"] != second["refresh_token"]
    assert stored["refresh_token"] in token_endpoint.live_refresh and written["mcpOAuth"] == {"kept": True}

    # Claude Code refreshes again and its token is fresh: the proxy adopts it without spending anything.
    token_endpoint.live_refresh.discard(stored["refresh_token"])
    third = token_endpoint.issue()
    _write_claude_code(creds, third, time.time() + 8 * 3600)
    assert run("refresh").exit_code == 0
    assert token_endpoint.refreshes == 1
    assert json.loads(run("export", "--show-tokens").output)["access_token"] == third["access_token"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--setup-token", "--linked"), "not a setup token"),
        (("-", "--linked"), "needs Claude Code's credentials file"),
    ],
)
def test_linked_needs_a_claude_code_file(run, args: tuple[str, ...], message: str) -> None:
    doc = json.dumps({"access_token": "sk-ant-oat01-x", "refresh_token": "sk-ant-ort01-x"})
    result = run("import", *args, input=doc)
    assert result.exit_code == 2 and message in result.output


def test_status_shows_the_refresh_token_end_and_warns_ahead(run) -> None:
    now = time.time()
    doc = {"access_token": "sk-ant-oat01-a", "refresh_token": "sk-ant-ort01-a", "expires_at": now + 3600,
           "refresh_expires_at": now + 2 * 86400}
    assert run("import", "-", input=json.dumps(doc)).exit_code == 0
    result = run("status")
    assert result.exit_code == 0, result.output
    end = time.strftime("%Y-%m-%d", time.gmtime(now + 2 * 86400))
    assert re.search(rf"Refresh token ends: in (2.0|1.9) days \({end}", result.output)
    assert "⚠️" in result.output.split("Refresh token ends")[1] and "log in again" in result.output
    data = json.loads(run("status", "--json").output)["accounts"][0]
    assert abs(data["refresh_expires_at"] - (now + 2 * 86400)) < 1

    doc["refresh_expires_at"] = now + 20 * 86400
    assert run("import", "-", "--force", input=json.dumps(doc)).exit_code == 0
    result = run("status")
    assert "Refresh token ends: in 20.0 days" in result.output and "log in again" not in result.output


def _loaded_after(env: dict[str, str], argv: list[str], modules: tuple[str, ...]) -> tuple[list[str], str]:
    """Run ``litellm claude ARGV`` in a fresh interpreter: which of ``modules`` it imported, and its stdout."""
    code = (
        "import json, sys; from litellm_claude_oauth.cli import main\n"
        f"try:\n    main({['claude', *argv]!r})\nexcept SystemExit: pass\n"
        f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_script_env(env), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    output, _, loaded = proc.stdout.rstrip().rpartition("\n")
    return json.loads(loaded), output


def test_status_does_not_load_yaml_or_model_code(env) -> None:
    heavy = ("yaml", "litellm", "litellm_claude_oauth.models", "litellm_claude_oauth.doctor")
    loaded, output = _loaded_after(env, ["status"], heavy)
    assert loaded == [] and "Not logged in" in output


def test_the_cli_module_and_help_import_only_click(env) -> None:
    # Each command imports what it needs; --help and tab completion stay instant.
    heavy = ("rich", "httpx", "pydantic", "asyncio", "litellm_claude_oauth.manager")
    loaded, output = _loaded_after(env, ["--help"], heavy)
    assert loaded == [] and "models" in output and "doctor" in output


def test_bad_environment_exits_2(run, monkeypatch) -> None:
    monkeypatch.setenv("CLAUDE_TOKEN_ENCRYPTION_KEY", "not-hex")
    result = run("status")
    assert result.exit_code == 2 and "CLAUDE_TOKEN_ENCRYPTION_KEY must be 64 hex" in result.output


def test_wrong_key_is_reported_and_file_untouched(run, token_endpoint: FakeTokenEndpoint, env, monkeypatch) -> None:
    assert run("callback", token_endpoint.authorize(login_json(run)["authorization_url"])).exit_code == 0
    before = Path(env["CLAUDE_TOKEN_FILE"]).read_bytes()
    monkeypatch.setenv("CLAUDE_TOKEN_ENCRYPTION_KEY", "c3" * 32)
    result = run("status")
    assert result.exit_code == 1 and "key that is not configured" in result.output
    assert run("refresh").exit_code == 1
    assert Path(env["CLAUDE_TOKEN_FILE"]).read_bytes() == before


def test_rotate_key(run, token_endpoint: FakeTokenEndpoint, env, monkeypatch) -> None:
    assert run("callback", token_endpoint.authorize(login_json(run)["authorization_url"])).exit_code == 0
    monkeypatch.setenv("CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD", env["CLAUDE_TOKEN_ENCRYPTION_KEY"])
    monkeypatch.setenv("CLAUDE_TOKEN_ENCRYPTION_KEY", "c3" * 32)
    assert "Re-encrypted 1 record(s)" in run("rotate-key").output
    monkeypatch.delenv("CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD")
    assert run("status").exit_code == 0


def _script_env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env}


def test_console_script_dispatches_claude_without_importing_litellm(env) -> None:
    code = (
        "import sys; from litellm_claude_oauth.cli import main\n"
        "try:\n    main(['claude', 'status', '--json'])\nexcept SystemExit: pass\n"
        "assert 'litellm' not in sys.modules, 'claude commands must not import litellm'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_script_env(env), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accounts"][0]["logged_in"] is False


def test_console_script_runs_litellm_for_everything_else(env) -> None:
    litellm = Path(sys.executable).parent / "litellm"
    proc = subprocess.run([str(litellm), "--help"], env=_script_env(env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--config" in proc.stdout and "--num_workers" in proc.stdout  # LiteLLM's own options
    proc = subprocess.run([str(litellm), "claude", "--help"], env=_script_env(env), capture_output=True, text=True)
    assert proc.returncode == 0 and "callback" in proc.stdout and "login" in proc.stdout


def test_main_is_importable_as_entry_point() -> None:
    assert callable(main)


@pytest.mark.parametrize("prefix", ["-", "-a", "-h", "-s"])
def test_code_starting_with_a_dash_is_not_an_option(run, token_endpoint: FakeTokenEndpoint, prefix: str) -> None:
    code, _, state = token_endpoint.authorize(login_json(run)["authorization_url"]).partition("#")
    token_endpoint.codes[prefix + code] = token_endpoint.codes.pop(code)
    result = run("callback", f"{prefix}{code}#{state}")
    assert result.exit_code == 0, result.output


def test_status_exits_1_when_the_refresh_token_has_ended(run) -> None:
    now = time.time()
    doc = {"access_token": "sk-ant-oat01-a", "refresh_token": "sk-ant-ort01-a", "expires_at": now + 3600,
           "refresh_expires_at": now - 60}
    assert run("import", "-", input=json.dumps(doc)).exit_code == 0
    result = run("status")
    assert result.exit_code == 1
    assert "Refresh token: ❌ ended" in result.output and "Re-login required" in result.output
