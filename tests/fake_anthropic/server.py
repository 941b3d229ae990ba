"""A fake Anthropic (OAuth + Messages API) on 127.0.0.1 for end-to-end tests.

The aiohttp app runs on its own event loop in a background thread, so sync tests,
async tests and other processes can all talk to it over real HTTP. Handlers run on
that loop; everything the test thread may also touch is guarded by ``self._lock``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

CLAUDE_CODE_SYSTEM = "You are Claude Code, Anthropic's official CLI for Claude."
OAUTH_BETA = "oauth-2025-04-20"
CODE_TTL_SECONDS = 600
EXPIRED_MESSAGE = "OAuth token has expired. Please obtain a new token or refresh your existing token."
_AUTHORIZE_PARAMS = ("client_id", "response_type", "redirect_uri", "scope", "code_challenge", "code_challenge_method", "state")
_CONTROL_KNOBS = {"access_ttl": float, "token_delay": float, "rotate_refresh_tokens": bool,
                  "require_claude_code_system": bool, "next_email": str}  # fmt: skip


@dataclass
class RecordedRequest:
    path: str
    method: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    query: dict[str, str] = field(default_factory=dict)
    status: int | None = None  # filled in once the handler has answered


@dataclass
class _AuthCode:
    challenge: str
    state: str
    client_id: str
    redirect_uri: str
    scope: str
    email: str
    created_at: float
    used: bool = False


@dataclass
class _Grant:  # one successful login; its refresh tokens rotate within it
    email: str
    client_id: str
    scope: str


@dataclass
class _AccessToken:
    email: str
    expires_at: float


# RequestKey only exists in newer aiohttp; older ones take plain string keys.
_RECORD: Any = web.RequestKey("record", RecordedRequest) if hasattr(web, "RequestKey") else "record"


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


def _oauth_error(error: str, description: str, status: int = 400) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _api_error(status: int, kind: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, headers=dict(headers or {}))


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
    return ""


def _first_system_text(system: Any) -> str | None:
    if isinstance(system, str):
        return system
    if isinstance(system, list) and system and isinstance(system[0], dict) and system[0].get("type") == "text":
        return system[0].get("text")
    return None


class FakeAnthropic:
    def __init__(self, port: int = 0, host: str = "127.0.0.1", access_ttl: float = 3600) -> None:
        self.host = host
        self.port = port
        # Knobs: plain attributes, read on the server loop at request time.
        self.access_ttl = access_ttl
        self.token_delay = 0.0
        self.rotate_refresh_tokens = True
        self.require_claude_code_system = False
        self.next_email = "user@example.com"  # sticky: used by every authorize until changed
        # Counters count attempts (rejected ones included), so single-flight tests see duplicates.
        self.refresh_count = 0
        self.exchange_count = 0
        self.messages_count = 0
        self.requests: list[RecordedRequest] = []

        self._lock = threading.Lock()
        self._codes: dict[str, _AuthCode] = {}
        self._grants: dict[str, _Grant] = {}
        self._refresh_tokens: dict[str, str] = {}  # live refresh token -> grant id
        self._access: dict[str, _AccessToken] = {}
        self._accounts: dict[str, tuple[str, str]] = {}  # email -> (account uuid, org uuid)
        self._rate_limits: dict[str, float] = {}  # email -> reset epoch
        self._token_failures: deque[tuple[int, float | None]] = deque()
        self._forced_401 = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        return self.url + "/v1/oauth/token"

    @property
    def authorize_url(self) -> str:
        return self.url + "/oauth/authorize"

    def start(self) -> FakeAnthropic:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-anthropic", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._serve(), loop).result(10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
            self._runner = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/oauth/authorize", self._h_authorize)
        app.router.add_post("/v1/oauth/token", self._h_token)
        app.router.add_post("/v1/messages", self._h_messages)
        app.router.add_get("/_fake/state", self._h_state)
        app.router.add_post("/_fake/control", self._h_control)
        app.router.add_post("/_fake/authorize", self._h_fake_authorize)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]

    def authorize(self, authorize_url: str, email: str | None = None) -> tuple[str, str]:
        """The human clicking "Authorize": only the query of ``authorize_url`` matters."""
        return self._issue_code(dict(parse_qsl(urlsplit(authorize_url).query, keep_blank_values=True)), email)

    def issue_tokens(self, email: str | None = None, scope: str = "user:profile user:inference") -> dict[str, Any]:
        """Token-endpoint response for a new login, skipping the HTTP dance."""
        with self._lock:
            return self._new_grant_tokens(email or self.next_email, "fake-client", scope)

    def fail_next_token_requests(self, n: int, status: int = 500, retry_after: float | None = None) -> None:
        with self._lock:
            self._token_failures.extend([(status, retry_after)] * n)

    def expire_access_token(self, token: str) -> None:
        with self._lock:
            if token in self._access:
                self._access[token].expires_at = 0

    def expire_all_access_tokens(self) -> None:
        with self._lock:
            for token in self._access.values():
                token.expires_at = 0

    def force_401_next(self, n: int = 1) -> None:
        with self._lock:
            self._forced_401 += n

    def rate_limit_token(self, token_or_email: str, reset_in_seconds: float) -> None:
        """Rate-limit the whole account behind an access token (or an email)."""
        with self._lock:
            known = self._access.get(token_or_email)
            self._rate_limits[known.email if known else token_or_email] = time.time() + reset_in_seconds

    def clear_rate_limits(self) -> None:
        with self._lock:
            self._rate_limits.clear()

    def messages_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == "/v1/messages"]

    def token_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == "/v1/oauth/token"]

    def reset_records(self) -> None:
        with self._lock:
            self.requests.clear()

    def state(self) -> dict[str, Any]:
        names = ("refresh_count", "exchange_count", "messages_count", "access_ttl", "token_delay")
        return {name: getattr(self, name) for name in names}

    def _issue_code(self, params: Mapping[str, str], email: str | None) -> tuple[str, str]:
        missing = [k for k in _AUTHORIZE_PARAMS if not params.get(k)]
        if missing:
            raise ValueError(f"missing parameter(s): {', '.join(missing)}")
        if params["response_type"] != "code":
            raise ValueError("response_type must be 'code'")
        if params["code_challenge_method"] != "S256":
            raise ValueError("code_challenge_method must be 'S256'")
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._codes[code] = _AuthCode(params["code_challenge"], params["state"], params["client_id"],
                                          params["redirect_uri"], params["scope"], email or self.next_email, time.time())  # fmt: skip
        return code, params["state"]

    def _new_grant_tokens(self, email: str, client_id: str, scope: str) -> dict[str, Any]:
        grant_id = uuid.uuid4().hex
        self._grants[grant_id] = _Grant(email=email, client_id=client_id, scope=scope)
        return self._tokens_for(grant_id, scope, with_refresh=True)

    def _tokens_for(self, grant_id: str, scope: str, with_refresh: bool) -> dict[str, Any]:
        """Caller holds the lock."""
        grant = self._grants[grant_id]
        access = "sk-ant-oat01-" + secrets.token_urlsafe(48)
        ttl = self.access_ttl
        self._access[access] = _AccessToken(email=grant.email, expires_at=time.time() + ttl)
        account_uuid, org_uuid = self._accounts.setdefault(grant.email, (str(uuid.uuid4()), str(uuid.uuid4())))
        body: dict[str, Any] = {"access_token": access}
        if with_refresh:
            refresh = "sk-ant-ort01-" + secrets.token_urlsafe(48)
            self._refresh_tokens[refresh] = grant_id
            body["refresh_token"] = refresh
        body.update(
            token_type="Bearer",
            expires_in=int(ttl) if float(ttl).is_integer() else ttl,
            scope=scope,
            account={"uuid": account_uuid, "email_address": grant.email},
            organization={"uuid": org_uuid, "name": "Example Org"},
        )
        return body

    def _exchange(self, body: Mapping[str, Any]) -> web.Response:
        missing = [k for k in ("code", "state", "client_id", "redirect_uri", "code_verifier") if not body.get(k)]
        if missing:
            return _oauth_error("invalid_request", f"missing field(s): {', '.join(missing)}")
        code = self._codes.get(str(body["code"]))
        if code is None or code.used:
            return _oauth_error("invalid_grant", "Invalid or already used authorization code")
        if time.time() - code.created_at > CODE_TTL_SECONDS:
            return _oauth_error("invalid_grant", "Authorization code has expired")
        for name in ("state", "client_id", "redirect_uri"):
            if body[name] != getattr(code, name):
                return _oauth_error("invalid_grant", f"{name} does not match the authorization request")
        try:
            ok = s256(str(body["code_verifier"])) == code.challenge
        except UnicodeEncodeError:
            ok = False
        if not ok:
            return _oauth_error("invalid_grant", "Invalid code_verifier")
        code.used = True
        return web.json_response(self._new_grant_tokens(code.email, code.client_id, code.scope))

    def _refresh(self, body: Mapping[str, Any]) -> web.Response:
        missing = [k for k in ("refresh_token", "client_id") if not body.get(k)]
        if missing:
            return _oauth_error("invalid_request", f"missing field(s): {', '.join(missing)}")
        old = str(body["refresh_token"])
        grant_id = self._refresh_tokens.get(old)
        if grant_id is None:
            return _oauth_error("invalid_grant", "Refresh token not found or invalid")
        grant = self._grants[grant_id]
        if body["client_id"] != grant.client_id:
            return _oauth_error("invalid_grant", "client_id does not match the refresh token")
        scope = grant.scope
        if body.get("scope"):
            scope = str(body["scope"])
            if not set(scope.split()) <= set(grant.scope.split()):
                return _oauth_error("invalid_scope", "requested scope exceeds the granted scope")
        if self.rotate_refresh_tokens:
            del self._refresh_tokens[old]
        return web.json_response(self._tokens_for(grant_id, scope, with_refresh=self.rotate_refresh_tokens))

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):
            return await handler(request)
        raw = await request.read()  # aiohttp caches it, handlers can still read the body
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        record = RecordedRequest(request.path, request.method, headers, body, dict(request.query))
        request[_RECORD] = record
        # Appended before handling so a test that has already read a stream sees it.
        with self._lock:
            self.requests.append(record)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            record.status = exc.status
            raise
        record.status = response.status
        return response

    async def _h_authorize(self, request: web.Request) -> web.Response:
        try:
            code, state = self._issue_code(request.query, None)
        except ValueError as exc:
            return _oauth_error("invalid_request", str(exc))
        payload = {"code": code, "state": state, "code_with_state": f"{code}#{state}"}
        if "application/json" in request.headers.get("Accept", ""):
            return web.json_response(payload)
        parts = urlsplit(request.query["redirect_uri"])
        query = parse_qsl(parts.query, keep_blank_values=True) + [("code", code), ("state", state)]
        location = urlunsplit(parts._replace(query=urlencode(query)))
        return web.json_response(payload, status=302, headers={"Location": location})

    async def _h_token(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _oauth_error("invalid_request", "Content-Type must be application/json")
        try:
            body = await request.json()
        except ValueError:
            return _oauth_error("invalid_request", "body is not valid JSON")
        if not isinstance(body, dict):
            return _oauth_error("invalid_request", "body must be a JSON object")
        grant_type = body.get("grant_type")
        if grant_type == "authorization_code":
            self.exchange_count += 1
        elif grant_type == "refresh_token":
            self.refresh_count += 1
        else:
            return _oauth_error("unsupported_grant_type", f"unsupported grant_type: {grant_type!r}")
        if self.token_delay:
            # Before validation, so concurrent refreshes of one token really race.
            await asyncio.sleep(self.token_delay)
        with self._lock:
            failure = self._token_failures.popleft() if self._token_failures else None
            if failure is None:
                return self._exchange(body) if grant_type == "authorization_code" else self._refresh(body)
        status, retry_after = failure
        headers = {"retry-after": str(math.ceil(retry_after))} if retry_after is not None else {}
        if status == 429:
            return _api_error(429, "rate_limit_error", "Rate limited. Please try again later.", headers)
        return _api_error(status, "api_error", "Internal server error", headers)

    async def _h_messages(self, request: web.Request) -> web.StreamResponse:
        self.messages_count += 1
        headers = {"request-id": "req_" + secrets.token_hex(12)}
        auth_error = self._check_auth(request, headers)
        if auth_error is not None:
            return auth_error
        try:
            body = await request.json()
        except ValueError:
            return _api_error(400, "invalid_request_error", "body is not valid JSON", headers)
        if not isinstance(body, dict):
            return _api_error(400, "invalid_request_error", "body must be a JSON object", headers)
        for name, kind in (("model", str), ("messages", list), ("max_tokens", int)):
            if not isinstance(body.get(name), kind):
                return _api_error(400, "invalid_request_error", f"{name}: Field required", headers)
        if self.require_claude_code_system and _first_system_text(body.get("system")) != CLAUDE_CODE_SYSTEM:
            message = "This credential is only authorized for use with Claude Code and cannot be used for other API requests."
            return _api_error(400, "invalid_request_error", message, headers)

        model = body["model"]
        reply = f"Hello from fake Claude ({model}): " + _last_user_text(body["messages"])[:200]
        input_tokens = max(1, len(json.dumps([body.get("system"), body["messages"]])) // 4)
        output_tokens = max(1, len(reply) // 4)
        headers["anthropic-ratelimit-unified-status"] = "allowed"
        headers["anthropic-ratelimit-unified-5h-status"] = "allowed"
        usage = {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        message: dict[str, Any] = {
            "id": "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {**usage, "output_tokens": output_tokens},
        }  # fmt: skip
        if not body.get("stream"):
            return web.json_response(message, headers=headers)
        return await self._stream(request, message, reply, headers)

    def _check_auth(self, request: web.Request, headers: dict[str, str]) -> web.Response | None:
        with self._lock:
            if self._forced_401 > 0:
                self._forced_401 -= 1
                return _api_error(401, "authentication_error", EXPIRED_MESSAGE, headers)
        h = request.headers
        if "x-api-key" in h:
            # OAuth tokens only work as a bearer; a leaked x-api-key is a plugin bug.
            return _api_error(401, "authentication_error", "invalid x-api-key", headers)
        auth = h.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return _api_error(401, "authentication_error", "x-api-key header is required", headers)
        betas = {b.strip() for b in ",".join(h.getall("anthropic-beta", [])).split(",")}
        if OAUTH_BETA not in betas:
            return _api_error(401, "authentication_error", "OAuth authentication is currently not supported.", headers)
        if not h.get("anthropic-version"):
            return _api_error(400, "invalid_request_error", "anthropic-version: header is required", headers)
        now = time.time()
        with self._lock:
            token = self._access.get(auth.removeprefix("Bearer ").strip())
            reset_at = self._rate_limits.get(token.email, 0.0) if token else 0.0
        if token is None:
            return _api_error(401, "authentication_error", "Invalid bearer token", headers)
        if token.expires_at <= now:
            return _api_error(401, "authentication_error", EXPIRED_MESSAGE, headers)
        if reset_at > now:
            reset = str(math.ceil(reset_at))
            prefix = "anthropic-ratelimit-unified-"
            limited = {"retry-after": str(max(1, math.ceil(reset_at - now))), prefix + "status": "rejected",
                       prefix + "reset": reset, prefix + "5h-status": "rejected", prefix + "5h-reset": reset,
                       prefix + "representative-claim": "five_hour"}  # fmt: skip
            message = "This request would exceed your account's rate limit. Please try again later."
            return _api_error(429, "rate_limit_error", message, {**headers, **limited})
        return None

    async def _stream(self, request: web.Request, message: dict[str, Any], reply: str, headers: dict[str, str]) -> web.StreamResponse:
        size = max(1, math.ceil(len(reply) / 5))
        start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": start},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "ping"},
            *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": reply[i : i + size]}}
              for i in range(0, len(reply), size)),
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": message["usage"]["output_tokens"]}},
            {"type": "message_stop"},
        ]  # fmt: skip
        response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
        request[_RECORD].status = 200
        await response.prepare(request)
        for event in events:
            await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await response.write_eof()
        return response

    async def _h_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _h_fake_authorize(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            code, state = self.authorize(str(body["authorize_url"]), body.get("email"))
        except (ValueError, KeyError, TypeError) as exc:
            return _oauth_error("invalid_request", f"bad authorize request: {exc}")
        return web.json_response({"code": code, "state": state, "code_with_state": f"{code}#{state}"})

    async def _h_control(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise TypeError("body must be a JSON object")
            self._apply_control(body)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.state())

    def _apply_control(self, body: dict[str, Any]) -> None:
        actions = {"expire_all_access_tokens", "expire_access_token", "force_401_next", "rate_limit_email",
                   "rate_limit_token", "reset_in", "clear_rate_limits", "fail_next_token_requests", "reset_records"}  # fmt: skip
        unknown = set(body) - actions - set(_CONTROL_KNOBS)
        if unknown:
            raise KeyError(f"unknown control key(s): {', '.join(sorted(unknown))}")
        for knob, cast in _CONTROL_KNOBS.items():
            if knob in body:
                setattr(self, knob, cast(body[knob]))
        if body.get("expire_all_access_tokens"):
            self.expire_all_access_tokens()
        if "expire_access_token" in body:
            self.expire_access_token(str(body["expire_access_token"]))
        if "force_401_next" in body:
            self.force_401_next(int(body["force_401_next"]))
        for target in ("rate_limit_email", "rate_limit_token"):
            if target in body:
                self.rate_limit_token(str(body[target]), float(body.get("reset_in", 60)))
        if body.get("clear_rate_limits"):
            self.clear_rate_limits()
        if "fail_next_token_requests" in body:
            spec = body["fail_next_token_requests"]
            spec = spec if isinstance(spec, dict) else {"n": spec}
            self.fail_next_token_requests(int(spec["n"]), int(spec.get("status", 500)), spec.get("retry_after"))
        if body.get("reset_records"):
            self.reset_records()
