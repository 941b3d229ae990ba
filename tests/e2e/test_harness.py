"""The leak check every e2e proxy goes through on stop really catches tokens."""

from pathlib import Path

import pytest

from .harness import Proxy, TokenLeak, stop_proxy


@pytest.mark.parametrize("line", ["Bearer sk-ant-oat01-abcdEFGH123", "refresh=sk-ant-ort01-zzzz", "x sk-ant-api03-key"])
def test_stop_proxy_fails_on_a_token_in_the_log(tmp_path: Path, line: str) -> None:
    log = tmp_path / "proxy.log"
    log.write_text(f"12:00 DEBUG something\n{line}\n")
    with pytest.raises(TokenLeak):
        stop_proxy(Proxy(url="http://127.0.0.1:1", env={}, log_path=log))


def test_stop_proxy_accepts_a_clean_log(tmp_path: Path) -> None:
    log = tmp_path / "proxy.log"
    log.write_text("Authorization: Bearer sk-oauth-test-1234\nOAuth token has expired\n")
    stop_proxy(Proxy(url="http://127.0.0.1:1", env={}, log_path=log))
