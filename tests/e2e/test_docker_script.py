"""test_oauth_docker.sh --url: the seed's whole workflow against a locally started proxy (no Docker).

Its Docker mode runs in CI (.ci/docker.sh), where a Docker engine can be started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_anthropic import FakeAnthropic

from .harness import MASTER_KEY, ROOT, proxy_env, start_proxy, stop_proxy

pytestmark = pytest.mark.e2e


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "test_oauth_docker.sh"), *args],
        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, cwd=ROOT,
    )


def curl_recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A `curl` first on PATH that appends its arguments to a file, then runs the real curl."""
    real = shutil.which("curl")
    assert real, "curl is needed"
    bin_dir, log = tmp_path / "bin", tmp_path / "curl-argv.log"
    bin_dir.mkdir()
    shim = bin_dir / "curl"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    shim.chmod(0o755)
    return bin_dir, log


def test_script_passes_against_local_proxy_and_fake_anthropic(fake: FakeAnthropic, tmp_path: Path) -> None:
    proxy = start_proxy(proxy_env(fake, tmp_path), tmp_path / "proxy.log")
    bin_dir, argv_log = curl_recorder(tmp_path)
    env = {
        **os.environ,
        "FAKE_AUTHORIZE_URL": f"{fake.url}/_fake/authorize",
        "NO_PROXY": "127.0.0.1,localhost",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "LITELLM_MASTER_KEY": MASTER_KEY,
    }
    try:
        result = run_script("--url", proxy.url, "--non-interactive", env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "0 failed" in output
        # It really logged in through the OAuth endpoints and chatted through the proxy.
        assert fake.exchange_count == 1 and fake.messages_count >= 2
        # Audit L9: curl got the key from a file, never as an argument (visible in ps).
        calls = argv_log.read_text().splitlines()
        assert len(calls) >= 6 and any("-H @" in c for c in calls)
        assert not [c for c in calls if MASTER_KEY in c]

        wrong_key = run_script("--url", proxy.url, "--key", "sk-wrong", "--non-interactive", env=env)
        assert wrong_key.returncode == 1
        assert "refused" in wrong_key.stdout + wrong_key.stderr
    finally:
        stop_proxy(proxy)


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-option"],
        ["--url"],
        ["--url", "http://127.0.0.1:9", "--override", ".ci/docker-compose.ci.yml"],
        ["--override", "no-such-compose-file.yml"],
        ["--cleanup", "--url", "http://127.0.0.1:9"],
    ],
)
def test_script_usage_errors_exit_2(args: list[str]) -> None:
    result = run_script(*args, env=dict(os.environ))
    assert result.returncode == 2, result.stdout + result.stderr



@pytest.mark.parametrize("jq", [True, False], ids=["jq", "python3"])
def test_the_code_exchange_body_keeps_values_that_start_with_a_dash(jq: bool, tmp_path: Path) -> None:
    """OAuth codes and states are base64url: about one login in 30 has one starting with "-".

    jq 1.6 read such a positional argument as an option ("Unknown option --EeJY…"), so the
    script's login failed at random (seen in CI).
    """
    env = dict(os.environ)
    if not jq:  # a PATH that has everything the script needs but jq
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name in ("mktemp", "dirname", "rm"):
            (bin_dir / name).symlink_to(shutil.which(name) or name)
        (bin_dir / "python3").symlink_to(os.path.realpath(sys.executable))  # the interpreter, not a shim
        env["PATH"] = str(bin_dir)
    values = ["code", "--EeJYHbM0anpjLTM2RTiZiDsjae", "state", "-x", "url", "https://a.test/?b=c&d=e"]
    script = 'source ./test_oauth_docker.sh; command -v jq >/dev/null && echo "jq on PATH" >&2; json obj "$@"'
    result = subprocess.run(["/bin/bash", "-c", script, "bash", *values], env=env, capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == dict(zip(values[::2], values[1::2], strict=True))
    assert ("jq on PATH" in result.stderr) == jq


def lock(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(tmp_path / "scripts" / "lock"), *args],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip


def test_lock_check_sees_dependency_changes_only(tmp_path: Path) -> None:
    """scripts/lock --check (a CI static check) fails once [project].dependencies or
    [build-system].requires differ from what the lock was made from, and only then."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "docker").mkdir()
    shutil.copy(ROOT / "scripts" / "lock", tmp_path / "scripts" / "lock")
    pyproject = (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(pyproject)
    digest = lock(tmp_path, "--digest").stdout.strip()
    assert len(digest) == 64
    # The repository's lock, with the header it would get from this pyproject.toml.
    body = [line for line in (ROOT / "docker" / "requirements.lock").read_text().splitlines()
            if not line.startswith("# pyproject-digest:")]  # fmt: skip
    (tmp_path / "docker" / "requirements.lock").write_text("\n".join([f"# pyproject-digest: sha256:{digest}", *body]) + "\n")

    def check_with(text: str) -> subprocess.CompletedProcess:
        (tmp_path / "pyproject.toml").write_text(text)
        return lock(tmp_path, "--check")

    assert check_with(pyproject).returncode == 0
    # Comments and other fields do not touch what the image installs.
    assert check_with("# a comment\n" + pyproject.replace('version = "', 'version = "9', 1)).returncode == 0
    assert "dependencies = [" in pyproject and "requires = [" in pyproject
    stale = check_with(pyproject.replace("dependencies = [", 'dependencies = [\n    "six",', 1))
    assert stale.returncode == 1
    assert stale.stderr.strip() == "scripts/lock: docker/requirements.lock is stale against pyproject.toml: run scripts/lock"
    assert check_with(pyproject.replace("requires = [", 'requires = ["wheel", ', 1)).returncode == 1
    (tmp_path / "docker" / "requirements.lock").unlink()
    assert "missing" in check_with(pyproject).stderr
