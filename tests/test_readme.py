"""The README cannot drift from the code: every environment variable and CLI command is documented."""

from __future__ import annotations

import os
from pathlib import Path

from litellm_claude_oauth.settings import missing_from_readme

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_environment_variable_is_in_the_readme() -> None:
    assert missing_from_readme(README) == []


def test_every_cli_command_is_in_the_cli_reference() -> None:
    from litellm_claude_oauth.cli import claude

    reference = README[README.index("## CLI reference"):README.index("## HTTP API")]
    missing = [name for name in claude.commands if f"`{name}" not in reference]
    assert missing == []


def test_the_two_commands_exist_and_are_executable() -> None:
    for script in ("scripts/serve", "scripts/test"):
        assert f"./{script}" in README
        assert os.access(ROOT / script, os.X_OK), script
