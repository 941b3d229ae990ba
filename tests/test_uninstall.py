"""What `pip uninstall litellm-claude-oauth` leaves behind, in a throwaway venv.

The plugin's `litellm` script is written over LiteLLM's own. pip records the file for
both packages, so uninstalling the plugin deletes it, and `litellm` is gone until
LiteLLM is reinstalled: the README gives the one command for that, and this test runs
that very command.

Speed: the venv gets only the two packages under test, installed with --no-deps;
everything they import comes from the running environment through a .pth file placed
after the venv's own site-packages, so the venv's copies win. --ignore-installed makes
pip install into the venv without ever touching the outer environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from litellm_claude_oauth.litellm_api import litellm_version

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def restore_command() -> str:
    """The command the README's "Supported LiteLLM versions" section gives for bringing `litellm` back."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Supported LiteLLM versions", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(pip install --force-reinstall[^\n]*)\n```", section)
    assert len(commands) == 1, "the README section should give exactly one restore command"
    return commands[0]


class Env:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        venv.EnvBuilder(with_pip=True).create(path)
        inner = subprocess.run(
            [str(self.bin / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        # The running environment's packages (LiteLLM's and our dependencies), after the venv's own.
        Path(inner, "zz_outer_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        self.env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(path),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_COMPILE": "1",  # byte-compiling LiteLLM's thousands of files is most of an install
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
        }
        self.env.pop("PYTHONPATH", None)

    def run(self, *args: str, shell: bool = False, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        command: str | list[str] = args[0] if shell else list(args)
        return subprocess.run(
            command, shell=shell, executable="/bin/bash" if shell else None, env=self.env, cwd=self.path,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def pip(self, *args: str) -> None:
        done = self.run(str(self.bin / "python"), "-m", "pip", *args)
        assert done.returncode == 0, f"pip {' '.join(args)}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"

    def litellm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.bin / "litellm"), *args)


def test_uninstall_removes_litellm_script_and_the_readme_command_restores_it(tmp_path: Path) -> None:
    version = litellm_version()
    env = Env(tmp_path / "venv")
    env.pip("install", "-q", "--no-deps", "--ignore-installed", f"litellm=={version}")
    env.pip("install", "-q", "--no-deps", "--ignore-installed", str(ROOT))

    # Installed: `litellm claude` is ours, the rest is LiteLLM's, and `litellm-claude` works alone.
    ours = env.litellm("claude", "--help")
    assert ours.returncode == 0 and "login" in ours.stdout, ours.stderr[-2000:]
    proxy_help = env.litellm("--help")  # not `claude`: handed to LiteLLM's own command
    assert proxy_help.returncode == 0 and "--config" in proxy_help.stdout, proxy_help.stderr[-2000:]
    alone = env.run(str(env.bin / "litellm-claude"), "--help")
    assert alone.returncode == 0 and "login" in alone.stdout, alone.stderr[-2000:]

    # Uninstalled: pip deletes the `litellm` file it recorded for the plugin, LiteLLM's included.
    env.pip("uninstall", "-y", "litellm-claude-oauth")
    assert not (env.bin / "litellm-claude").exists()
    assert not (env.bin / "litellm").exists()
    gone = env.run("litellm --help", shell=True)
    assert gone.returncode == 127  # bash: command not found

    # The README's one command brings LiteLLM's own `litellm` back, at the same version.
    restored = env.run(restore_command(), shell=True, timeout=300)
    assert restored.returncode == 0, restored.stdout[-2000:] + restored.stderr[-2000:]
    back = env.litellm("--help")
    assert back.returncode == 0 and "--config" in back.stdout, back.stderr[-2000:]
    assert "litellm_claude_oauth" not in (env.bin / "litellm").read_text()
    shown = env.run(str(env.bin / "python"), "-m", "pip", "show", "litellm")
    assert f"Version: {version}" in shown.stdout
    assert sys.prefix != str(env.path)  # the outer environment was only read
