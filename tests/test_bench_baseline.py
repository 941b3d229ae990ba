"""bench.overhead prices the plugin only if its baseline is the same proxy config with a static key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from bench.overhead import static_config
from litellm_claude_oauth.routing import is_marker
from tests.e2e.harness import ROOT


def test_the_baseline_serves_the_same_models_with_the_static_key_and_no_plugin() -> None:
    plugin = yaml.safe_load((ROOT / "config.oauth.yaml").read_text())
    static = static_config("sk-ant-oat01-static", "http://127.0.0.1:9", [])

    assert [d["model_name"] for d in static["model_list"]] == [d["model_name"] for d in plugin["model_list"]]
    assert [d["litellm_params"]["model"] for d in static["model_list"]] == [
        d["litellm_params"]["model"] for d in plugin["model_list"]
    ]
    assert not any(is_marker(d["litellm_params"].get("api_key")) for d in static["model_list"])
    assert {d["litellm_params"]["api_key"] for d in static["model_list"]} == {"sk-ant-oat01-static"}
    assert {d["litellm_params"]["api_base"] for d in static["model_list"]} == {"http://127.0.0.1:9"}
    assert static["litellm_settings"]["callbacks"] == []
    # Every other setting stays as the plugin's config has it (drop_params changes LiteLLM's work).
    assert {k: v for k, v in static["litellm_settings"].items() if k != "callbacks"} == {
        k: v for k, v in plugin["litellm_settings"].items() if k != "callbacks"
    }
    assert static["general_settings"] == plugin["general_settings"]


def test_the_callback_baseline_adds_only_the_given_callback() -> None:
    static = static_config("sk-ant-oat01-static", "http://127.0.0.1:9", ["bench.noop_callback.handler"])
    assert static["litellm_settings"]["callbacks"] == ["bench.noop_callback.handler"]


def test_each_probe_does_its_one_step_of_the_hook_and_nothing_else() -> None:
    from bench import probes
    from litellm_claude_oauth.settings import DEFAULT_SYSTEM_PROMPT

    def kwargs() -> dict:
        return {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}]}

    assert probes.hook.change(kwargs(), "acompletion") == kwargs()
    with_identity = probes.identity.change(kwargs(), "acompletion")
    assert with_identity["messages"] == [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, *kwargs()["messages"]]
    assert probes.cooldown.change(kwargs(), "acompletion") == kwargs()  # no model_info here: nothing to exempt
    first, second = probes.client.change(kwargs(), "acompletion"), probes.client.change(kwargs(), "acompletion")
    assert first["client"] is second["client"] and {k: v for k, v in first.items() if k != "client"} == kwargs()


def test_a_bench_proxy_freezes_its_heap_on_the_signal_and_only_then() -> None:
    """bench.common.freeze() reaches proxies through bench/freeze/sitecustomize.py on their PYTHONPATH."""
    import os
    import subprocess
    import sys

    from bench.common import freezable

    script = (
        "import gc, os, signal, sys\n"
        "keep = [[i] for i in range(1000)]\n"
        "before = gc.get_freeze_count()\n"
        "os.kill(os.getpid(), signal.SIGUSR2)\n"
        "print(before, gc.get_freeze_count())\n"
    )
    env = {**os.environ, **freezable()}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True)
    before, after = map(int, done.stdout.split())
    assert before == 0 and after > 1000


def test_by_default_both_proxies_send_the_same_request_upstream() -> None:
    """Sonnet needs the identity line from any subscription token: the baseline's clients send it, the plugin adds it."""
    from bench.overhead import IDENTITY, MODEL, arguments
    from litellm_claude_oauth.identity import add_identity
    from litellm_claude_oauth.ratelimit import model_family

    args = arguments().parse_args([])
    assert args.model == MODEL and model_family(MODEL) == "sonnet" and args.baseline_identity
    user = [{"role": "user", "content": "Hi"}]
    plugin = {"messages": list(user)}
    add_identity(plugin, IDENTITY, "acompletion")
    # bench.common._drive sends the baseline's system message first, as the hook puts the identity first.
    assert plugin["messages"] == [{"role": "system", "content": IDENTITY}, *user]


def test_the_bench_refuses_a_comparison_the_api_would_refuse() -> None:
    import subprocess
    import sys

    for flag in ("--no-baseline-identity", "--no-identity"):
        run = subprocess.run([sys.executable, "-m", "bench.overhead", flag], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 2 and "need a Haiku model" in run.stderr, run.stderr


def test_without_the_plugins_identity_line_the_baseline_must_drop_it_too() -> None:
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "bench.overhead", "--model", "claude-haiku-4.5", "--no-identity"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "add --no-baseline-identity" in run.stderr, run.stderr


def test_both_proxies_share_one_cpu_that_alternates_and_the_load_gets_the_rest() -> None:
    from bench.common import placement

    assert placement([0, 1], 0) == ({0}, {1})
    assert placement([0, 1], 1) == ({1}, {0})
    assert placement([2, 5, 7], 4) == ({5}, {2, 7})
    assert placement([3], 0) is None  # one CPU: nothing to separate


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to one of them")
def test_pinning_reaches_every_thread_of_a_running_process() -> None:
    """A proxy's threads exist before the bench pins it: pinning only the main thread would leave them free."""
    from bench.common import pin

    code = "import threading, time\nfor _ in range(3): threading.Thread(target=time.sleep, args=(30,)).start()\n" \
           "print('ready', flush=True)\ntime.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        target = {sorted(os.sched_getaffinity(0))[-1]}
        pin(proc.pid, target)
        threads = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
        assert len(threads) == 4
        assert all(os.sched_getaffinity(t) == target for t in threads)
    finally:
        proc.kill()
        proc.wait()


async def test_the_hot_path_bench_drives_the_real_hook_and_flow(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench.hot_path prices our code only if each step really runs it: the token lands on the wire."""
    from bench import hot_path

    for name in ("CLAUDE_TOKEN_FILE", "CLAUDE_TOKEN_ENCRYPTION_KEY", "CLAUDE_API_BASE"):
        monkeypatch.setenv(name, "")  # steps() sets them; monkeypatch puts them back
    found = await hot_path.steps(tmp_path)
    assert set(found) == {"baseline", "hook", "all"}
    kwargs, _request = await found["hook"]()
    assert kwargs["api_key"] != "claude-oauth" and kwargs["client"] is not None
    sent = await found["all"]()
    assert sent.headers["authorization"] == "Bearer sk-ant-oat01-" + "a" * 80
    assert sent.headers["user-agent"].startswith("litellm-claude-oauth/")
    baseline = await found["baseline"]()
    assert "litellm-claude-oauth" not in baseline.headers["user-agent"]
