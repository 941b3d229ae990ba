"""End to end: the login page in real headless Chromium, through the real proxy, against the fake Anthropic.

Chromium (Debian's package, see scripts/browser.sh) is driven over the Chrome DevTools
Protocol directly, on one websocket (aiohttp), with no WebDriver and no browser download.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from tests.fake_anthropic import FakeAnthropic

from .harness import MASTER_KEY, ROOT, Proxy, login_via_cli, proxy_env, start_proxy, stop_proxy, terminate_group

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
UI = "/auth/claude/oauth/ui"

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing: run scripts/browser.sh"
)


@pytest.fixture(scope="module")
def proxy(fake: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("ui-proxy")
    running = start_proxy(proxy_env(fake, tmp), tmp / "proxy.log")
    yield running
    stop_proxy(running)


# --- a minimal CDP client ------------------------------------------------------------


class CDPError(RuntimeError):
    pass


class Page:
    """One tab, attached with a flat session on the browser's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self._ws = ws
        self._ids = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            future = self._waiting.pop(data["id"], None) if "id" in data else None
            if future is None:
                self.events.append(data)
            elif not future.done():
                if "error" in data:
                    future.set_exception(CDPError(f"{data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(CDPError("DevTools websocket closed"))

    async def send(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> dict[str, Any]:
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params or {}}
        if not browser and self.session:
            message["sessionId"] = self.session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._ids] = future
        await self._ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, 30)

    async def close(self) -> None:
        self._reader.cancel()

    # --- page helpers

    async def js(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                text = await self.js("document.body ? document.body.innerText : ''")
                raise AssertionError(f"timed out waiting for {expression!r}; page text:\n{text}")
            await asyncio.sleep(0.1)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    async def click(self, selector: str) -> None:
        """A real mouse click at the element's centre (so the page gets user activation)."""
        box = await self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    async def type(self, selector: str, text: str) -> None:
        await self.click(selector)
        await self.js(f"document.querySelector({json.dumps(selector)}).select()")
        await self.send("Input.insertText", {"text": text})

    async def text(self, selector: str) -> str:
        return await self.js(f"document.querySelector({json.dumps(selector)}).innerText")

    async def screenshot(self, path: Path) -> bytes:
        """The whole page as PNG, written to ``path``."""
        size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
        shot = await self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            },
        )
        data = base64.b64decode(shot["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def problems(self) -> list[str]:
        """Uncaught exceptions and CSP violations seen so far."""
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails")))
            elif event.get("method") == "Log.entryAdded":
                text = params.get("entry", {}).get("text", "")
                if "Content Security Policy" in text or "Refused to" in text:
                    found.append(text)
        return found


def spawn_chromium(profile: Path, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--window-size=900,900",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile / 'data'}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,  # its renderer/GPU/zygote children go down with it
    )


@asynccontextmanager
async def chromium() -> AsyncIterator[Page]:
    """Headless Chromium on a free DevTools port; yields one attached tab."""
    profile = Path(tempfile.mkdtemp(prefix="ui-chromium-"))
    stderr = (profile / "stderr.log").open("wb")
    proc = spawn_chromium(profile, stderr)
    try:
        ws_url = None
        deadline = time.monotonic() + 30
        while ws_url is None:
            for line in (profile / "stderr.log").read_text(errors="replace").splitlines():
                if line.startswith("DevTools listening on "):
                    ws_url = line.split(" on ", 1)[1].strip()
            if ws_url is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Chromium did not start:\n{(profile / 'stderr.log').read_text()[-3000:]}")
                await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
            page = Page(ws)
            target = await page.send("Target.createTarget", {"url": "about:blank"}, browser=True)
            attached = await page.send(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, browser=True
            )
            page.session = attached["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                await page.send(f"{domain}.enable")
            try:
                yield page
            finally:
                await page.close()
    finally:
        terminate_group(proc, grace=10)
        stderr.close()
        shutil.rmtree(profile, ignore_errors=True)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


# --- tests ---------------------------------------------------------------------------


def test_page_is_served_without_auth_with_security_headers(proxy: Proxy) -> None:
    with proxy.client(key=None) as client:
        page = client.get(UI)
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text and "<style" not in page.text  # everything from 'self'
        for name, kind in [("login.js", "text/javascript"), ("login.css", "text/css")]:
            asset = client.get(f"{UI}/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
            assert asset.headers["x-content-type-options"] == "nosniff"
        assert client.get(f"{UI}/ui.py").status_code == 404
        assert client.get(f"{UI}/login.html").status_code == 404
        slash = client.get(f"{UI}/", follow_redirects=True)
        assert slash.status_code == 200 and str(slash.url).endswith(UI)
        # The data behind the page is still admin-only.
        assert client.get("/auth/claude/oauth/status").status_code == 401


@needs_chromium
async def test_login_in_a_real_browser(proxy: Proxy, fake: FakeAnthropic) -> None:
    url = proxy.url + UI
    fake.access_ttl = 3600  # the fake's default follows Anthropic's 8 h; the row below checks "in 59 min"
    async with chromium() as page:
        await page.goto(url)
        # Script and style both loaded under the CSP.
        await page.wait_for(
            "document.documentElement.dataset.ready === '1' && getComputedStyle(document.body).margin === '0px'"
        )
        # Capture what "Log in with Claude" opens instead of opening a tab.
        await page.js("window.__opened = []; window.open = (u) => { window.__opened.push(String(u)); return null; }")

        # Without the key every API call is refused by the server, and the page says so.
        await page.click("#login")
        await page.wait_for("!document.querySelector('#message').hidden")
        message = await page.text("#message")
        assert "missing admin key" in message, message
        assert await page.js("document.querySelector('#message').className") == "message error"
        assert await page.js("window.__opened.length") == 0

        # A wrong key: refused too.
        await page.type("#admin-key", "sk-not-the-master-key")
        await page.click("#key-save")
        await page.wait_for("document.querySelector('#message').innerText.includes('invalid admin key')")

        # The right key: the status table fills in.
        await page.type("#admin-key", MASTER_KEY)
        await page.click("#key-save")
        await page.wait_for("document.querySelector('#message').innerText.includes('Admin key accepted')")
        assert await page.js("document.querySelector('#admin-key').value") == ""  # not left in the DOM
        assert await page.js("sessionStorage.getItem('claudeOAuth.adminKey')") == MASTER_KEY
        assert MASTER_KEY not in await page.js("location.href")
        row = await page.text("#status-body tr[data-account='default']")
        assert "Not logged in" in row, row

        # Log in: the page calls /start and opens the authorization URL.
        await page.click("#login")
        authorize_url = await page.wait_for("window.__opened[0]")
        assert authorize_url.startswith(fake.authorize_url)
        assert "open the authorization page" in await page.text("#message")
        code, state = fake.authorize(authorize_url, email="ui-user@example.com")

        await page.type("#code", f"{code}#{state}")
        await page.click("#submit-code")
        await page.wait_for(
            "[...document.querySelectorAll('#status-body tr[data-account=\"default\"] .badge')]"
            ".some(b => b.innerText === 'Valid')"
        )
        message = await page.text("#message")
        assert "Logged in" in message and "ui-user@example.com" in message, message
        row = await page.text("#status-body tr[data-account='default']")
        assert "ui-user@example.com" in row and "in 59 min" in row, row

        await page.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 0, "y": 0})  # no hover
        shot = await page.screenshot(ARTIFACTS / "ui-login.png")
        assert (ARTIFACTS / "ui-login.png").stat().st_size > 10_000
        width, height = png_size(shot)
        assert width >= 600 and height >= 400, (width, height)

        # Second account, bare code: the page supplies the state remembered from /start.
        await page.type("#account", "work")
        await page.click("#login")
        authorize_url = await page.wait_for("window.__opened[1]")
        code, _ = fake.authorize(authorize_url, email="work@example.com")
        await page.type("#code", code)
        await page.click("#submit-code")
        await page.wait_for("document.querySelector('#message').innerText.includes('work@example.com')")
        row = await page.text("#status-body tr[data-account='work']")
        assert "Valid" in row, row

        # A used code is refused with the server's detail.
        await page.type("#code", f"{code}#{state}")
        await page.click("#submit-code")
        await page.wait_for("document.querySelector('#message').className === 'message error'")
        assert "Error:" in await page.text("#message")

        await page.click("#refresh")
        await page.wait_for("document.querySelector('#message').innerText.includes('Refreshed account “work”')")

        await page.js("window.confirm = () => true")
        await page.click("#logout")
        await page.wait_for("document.querySelector('#message').innerText.includes('Logged out account “work”')")
        row = await page.text("#status-body tr[data-account='default']")
        assert "Valid" in row and not await page.js("document.querySelector('#status-body tr[data-account=\"work\"]')")

        # "Forget" drops the key: the next call is refused again.
        await page.click("#key-forget")
        assert await page.js("sessionStorage.getItem('claudeOAuth.adminKey')") is None
        await page.click("#status-reload")
        await page.wait_for("document.querySelector('#message').innerText.includes('missing admin key')")

        # Never a token on the page.
        html = await page.js("document.documentElement.outerHTML")
        assert "sk-ant-" not in html
        assert page.problems() == []

    with proxy.client() as client:
        status = client.get("/auth/claude/oauth/status", params={"account": "default"}).json()["accounts"][0]
    assert status["valid"] and status["account_email"] == "ui-user@example.com"



async def seed_quotas(proxy: Proxy, now: float) -> None:
    """What another proxy worker saw on its responses, shared the way workers share it (no Redis: the sidecar)."""
    from litellm_claude_oauth.quotas import FileQuotaBackend, Quotas, sidecar_directory
    from litellm_claude_oauth.settings import Settings

    p = "anthropic-ratelimit-unified-"
    seen = {
        "default": {f"{p}5h-utilization": "0.62", f"{p}5h-reset": str(int(now + 1.8 * 3600)),
                    f"{p}5h-status": "allowed", f"{p}7d-utilization": "0.31",
                    f"{p}7d-reset": str(int(now + 3.2 * 86400)), f"{p}7d-status": "allowed"},
        "max": {f"{p}5h-utilization": "0.93", f"{p}5h-reset": str(int(now + 40 * 60)),
                f"{p}5h-status": "allowed_warning", f"{p}7d-utilization": "0.78",
                f"{p}7d-reset": str(int(now + 2 * 86400)), f"{p}7d_opus-utilization": "1.0",
                f"{p}7d_opus-status": "rejected", f"{p}7d_opus-reset": str(int(now + 5 * 86400)),
                f"{p}overage-status": "rejected", f"{p}overage-disabled-reason": "org_level_disabled"},
    }
    directory = sidecar_directory(Path(proxy.env["CLAUDE_TOKEN_FILE"]))
    quotas = Quotas(Settings(), FileQuotaBackend(directory), worker="e2e-other-worker")
    for account, headers in seen.items():
        quotas.observe(account, headers, now)
    await quotas.aclose()  # pushes what it saw


@needs_chromium
async def test_quota_bars_and_refresh_token_warning(proxy: Proxy, fake: FakeAnthropic) -> None:
    with proxy.client() as client:
        if not client.get("/auth/claude/oauth/status", params={"account": "default"}).json()["accounts"][0]["valid"]:
            login_via_cli(proxy, fake)
    # "max" logs in with a refresh token that ends in two days: the page must say so.
    ttl = fake.oauth.refresh_ttl
    fake.oauth.refresh_ttl = 2 * 86400 + 600
    try:
        login_via_cli(proxy, fake, account="max")
    finally:
        fake.oauth.refresh_ttl = ttl
    now = time.time()
    await seed_quotas(proxy, now)

    async with chromium() as page:
        await page.goto(proxy.url + UI)
        await page.wait_for("document.documentElement.dataset.ready === '1'")
        await page.type("#admin-key", MASTER_KEY)
        await page.click("#key-save")
        await page.wait_for("!!document.querySelector('tr[data-detail-for=\"max\"] .quota-window')")

        default = await page.text("tr[data-detail-for='default']")
        assert "5h" in default and "62%" in default and "resets in 1h 4" in default, default
        assert "7d" in default and "31%" in default and "resets in 3d 4h" in default, default
        meter = "document.querySelector('tr[data-detail-for=\"default\"] [data-window=\"5h\"] meter')"
        assert await page.js(f"{meter}.value") == pytest.approx(0.62)

        detail = await page.text("tr[data-detail-for='max']")
        assert "93%" in detail and "allowed warning" in detail, detail
        assert "resets in 39 min" in detail or "resets in 40 min" in detail, detail
        assert "7d opus" in detail and "100%" in detail and "rejected" in detail, detail
        assert "extra usage" in detail, detail
        assert "the refresh token ends in 2.0 days" in detail, detail
        high = await page.js("[...document.querySelectorAll('tr[data-detail-for=\"max\"] .quota-window.high')]"
                             ".map(e => e.dataset.window)")
        assert high == ["5h", "7d_opus"], high

        # Clicking the detail row selects its account, as the account row does.
        await page.click("tr[data-detail-for='max'] .q-name")
        assert await page.js("document.querySelector('#account').value") == "max"

        await page.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 0, "y": 0})
        shot = await page.screenshot(ARTIFACTS / "ui-quotas.png")
        width, height = png_size(shot)
        assert width >= 600 and height >= 400 and len(shot) > 10_000, (width, height, len(shot))
        assert "sk-ant-" not in await page.js("document.documentElement.outerHTML")
        assert page.problems() == []
