"""A fake Anthropic (OAuth + Messages API) on 127.0.0.1, strict like the live service of late 2026.

By default it behaves as research/protocol-2026.md §2 describes the real one: the identity
gate (headerless ``429 "Error"`` for non-Haiku models), 8-hour access tokens, single-use
refresh tokens with an absolute lifetime, unified rate-limit headers on every Messages
response, only current model ids, the token endpoint's User-Agent edge. Each rule can be
relaxed for a test that needs the old behaviour (constructor arguments, attributes, or
``POST /_fake/control``).

The aiohttp app runs on its own event loop in a background thread, so sync tests, async
tests and other processes can all talk to it over real HTTP. The OAuth state machine is
:class:`.oauth_state.OAuthState` (shared with the respx fixture in tests/conftest.py);
everything else the test thread may also touch is guarded by ``self._lock``.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from . import catalog, limits, replies
from .oauth_state import (
    ACCESS_TTL_SECONDS,
    REFRESH_TTL_SECONDS,
    AuthorizeError,
    OAuthState,
    Reply,
    api_error,
    delegated,
    s256,
)

CLAUDE_CODE_SYSTEM = replies.CLAUDE_CODE_SYSTEM
OAUTH_BETA = "oauth-2025-04-20"
EXPIRED_MESSAGE = "OAuth token has expired. Please obtain a new token or refresh your existing token."
SCOPE_MESSAGE = ("OAuth token does not meet scope requirement any_of(user:inference, user:ccr_inference, "
                 "user:voice, org:service_key_inference)")  # fmt: skip
INFERENCE_SCOPES = frozenset({"user:inference", "user:ccr_inference", "user:voice", "org:service_key_inference"})
# The refusals a test can switch on: status, error type, message (protocol-2026 §2.2, §2.3).
REFUSALS: dict[str, tuple[int, str, str]] = {
    "extra_usage": (400, "invalid_request_error",
                    "You're out of extra usage. Add more at claude.ai/settings/usage and keep going."),
    "third_party": (400, "invalid_request_error", "Third-party apps now draw from your extra usage, not your plan "
                    "limits. Add more at claude.ai/settings/usage and keep going."),
    "claude_code_only": (400, "invalid_request_error", "This credential is only authorized for use with Claude Code "
                         "and cannot be used for other API requests."),
    "scope": (403, "permission_error", SCOPE_MESSAGE),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "org_disabled": (400, "invalid_request_error", "This organization has been disabled."),
    "throttled": (429, "rate_limit_error", "Rate limited"),
}  # fmt: skip
_CONTROL_KNOBS = {"access_ttl": float, "token_delay": float, "rotate_refresh_tokens": bool,
                  "require_claude_code_system": bool, "next_email": str, "enforce_models": bool,
                  "check_token_user_agent": bool, "report_refresh_ttl": bool}  # fmt: skip


@dataclass
class RecordedRequest:
    path: str
    method: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    query: dict[str, str] = field(default_factory=dict)
    status: int | None = None  # filled in once the handler has answered


# RequestKey only exists in newer aiohttp; older ones take plain string keys.
_RECORD: Any = web.RequestKey("record", RecordedRequest) if hasattr(web, "RequestKey") else "record"


def _response(reply: Reply, extra: Mapping[str, str] | None = None) -> web.Response:
    headers = {**dict(extra or {}), **dict(reply.headers)}
    if reply.is_json:
        return web.json_response(reply.body, status=reply.status, headers=headers)
    return web.Response(status=reply.status, text=reply.body, headers=headers)


def _error(status: int, kind: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _response(api_error(status, kind, message), headers)


class FakeAnthropic:
    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        access_ttl: float = ACCESS_TTL_SECONDS,
        *,
        refresh_ttl: float | None = REFRESH_TTL_SECONDS,
        require_claude_code_system: bool = True,
        enforce_models: bool = True,
        check_token_user_agent: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.oauth = OAuthState(access_ttl=access_ttl, refresh_ttl=refresh_ttl)
        self.oauth.check_user_agent = check_token_user_agent
        # Knobs: plain attributes, read on the server loop at request time.
        self.token_delay = 0.0
        self.require_claude_code_system = require_claude_code_system  # the identity gate
        self.enforce_models = enforce_models  # False: any model id is served (the old fake)
        self.messages_count = 0
        self.requests: list[RecordedRequest] = []

        self._lock = threading.Lock()
        self._usage: dict[str, limits.AccountUsage] = {}  # email -> windows
        self._hidden: dict[str, set[str]] = {}  # email -> model ids it cannot see
        self._refusals: dict[str | None, str] = {}  # email (None: every account) -> refusal kind
        self._token_failures: deque[tuple[int, float | None]] = deque()
        self._forced_401 = 0
        self._cache = replies.Cache()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- knobs that live in the OAuth state -----------------------------------------------

    access_ttl = delegated("oauth", "access_ttl")
    rotate_refresh_tokens = delegated("oauth", "rotate")
    next_email = delegated("oauth", "next_email")
    check_token_user_agent = delegated("oauth", "check_user_agent")
    report_refresh_ttl = delegated("oauth", "report_refresh_ttl")
    refresh_count = delegated("oauth", "refresh_count", writable=False)
    exchange_count = delegated("oauth", "exchange_count", writable=False)

    # -- lifecycle ----------------------------------------------------------------------

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
        app.router.add_post("/v1/messages", self._h_messages)  # "?beta=true" too: the query is ignored
        app.router.add_post("/v1/messages/count_tokens", self._h_count_tokens)
        app.router.add_get("/v1/models", self._h_models)
        app.router.add_get("/v1/models/{model_id}", self._h_model)
        app.router.add_get("/_fake/state", self._h_state)
        app.router.add_post("/_fake/control", self._h_control)
        app.router.add_post("/_fake/authorize", self._h_fake_authorize)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]

    # -- what tests call --------------------------------------------------------------------

    def authorize(self, authorize_url: str, email: str | None = None) -> tuple[str, str]:
        """The human clicking "Authorize": only the query of ``authorize_url`` matters. ValueError if refused."""
        return self.oauth.authorize(dict(parse_qsl(urlsplit(authorize_url).query, keep_blank_values=True)), email)

    def issue_tokens(self, email: str | None = None, scope: str = "user:profile user:inference") -> dict[str, Any]:
        """Token-endpoint response for a new login, skipping the HTTP dance."""
        return self.oauth.issue(email, scope)

    def refresh_token_alive(self, token: str | None) -> bool:
        """Would the token endpoint accept this refresh token? Asked without spending it."""
        return self.oauth.refresh_token_alive(token)

    def end_refresh_lifetime(self, email: str | None = None) -> None:
        """Every refresh token (of ``email``) reaches its absolute end now: the monthly re-login."""
        self.oauth.end_refresh_lifetime(email)

    def fail_next_token_requests(self, n: int, status: int = 500, retry_after: float | None = None) -> None:
        with self._lock:
            self._token_failures.extend([(status, retry_after)] * n)

    def expire_access_token(self, token: str) -> None:
        self.oauth.expire_access_token(token)

    def expire_all_access_tokens(self) -> None:
        self.oauth.expire_all_access_tokens()

    def force_401_next(self, n: int = 1) -> None:
        with self._lock:
            self._forced_401 += n

    def _email(self, token_or_email: str) -> str:
        known = self.oauth.access_token(token_or_email)
        return known.email if known else token_or_email

    def _account(self, email: str) -> limits.AccountUsage:
        """Caller holds self._lock."""
        return self._usage.setdefault(email, limits.AccountUsage(anchor=time.time()))

    def rate_limit_token(self, token_or_email: str, reset_in_seconds: float, profile: str = "five_hour") -> None:
        """Reject the account behind an access token (or an email) for ``reset_in_seconds``.

        ``five_hour``/``seven_day`` refuse every model; ``seven_day_opus``, ``seven_day_sonnet``
        and ``seven_day_oi`` (Fable) only that family. The 429 carries the full header set.
        """
        name = limits.profile_name(profile)
        with self._lock:
            account = self._account(self._email(token_or_email))
            account.rejections[name] = limits.Rejection(name, time.time() + reset_in_seconds)

    def clear_rate_limits(self) -> None:
        with self._lock:
            for account in self._usage.values():
                account.rejections.clear()

    def set_usage(self, token_or_email: str, *, five_hour: float | None = None, seven_day: float | None = None,
                  overage_enabled: bool | None = None, overage_in_use: bool | None = None) -> None:  # fmt: skip
        """What the account's headers report: window utilization (0..1) and the overage lane."""
        with self._lock:
            account = self._account(self._email(token_or_email))
            for name, value in (("five_hour", five_hour), ("seven_day", seven_day)):
                if value is not None:
                    if not 0 <= float(value) <= 1:
                        raise ValueError(f"{name} utilization must be within 0..1, not {value}")
                    setattr(account, name, float(value))
            if overage_enabled is not None:
                account.overage_enabled = bool(overage_enabled)
            if overage_in_use is not None:
                account.overage_in_use = bool(overage_in_use)

    def hide_model(self, token_or_email: str, model_id: str) -> None:
        """This account no longer sees ``model_id``: absent from /v1/models, 404 on /v1/messages."""
        with self._lock:
            self._hidden.setdefault(self._email(token_or_email), set()).add(model_id)

    def show_model(self, token_or_email: str, model_id: str) -> None:
        with self._lock:
            self._hidden.get(self._email(token_or_email), set()).discard(model_id)

    def refuse(self, kind: str, token_or_email: str | None = None) -> None:
        """Answer every Messages request (of one account, or all) with refusal ``kind`` (see REFUSALS)."""
        if kind not in REFUSALS:
            raise ValueError(f"unknown refusal {kind!r}; one of {', '.join(REFUSALS)}")
        with self._lock:
            self._refusals[None if token_or_email is None else self._email(token_or_email)] = kind

    def clear_refusals(self) -> None:
        with self._lock:
            self._refusals.clear()

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
        names = ("refresh_count", "exchange_count", "messages_count", "access_ttl", "token_delay",
                 "require_claude_code_system", "enforce_models", "check_token_user_agent")  # fmt: skip
        return {name: getattr(self, name) for name in names}

    # -- HTTP -------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):
            return await handler(request)
        raw = await request.read()  # aiohttp caches it, handlers can still read the body
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if body is None and request.content_type == "application/x-www-form-urlencoded":
            body = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
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
            code, state = self.oauth.authorize(request.query)
        except AuthorizeError as exc:
            return web.json_response({"error": "invalid_request", "error_description": str(exc)}, status=400)
        payload = {"code": code, "state": state, "code_with_state": f"{code}#{state}"}
        if "application/json" in request.headers.get("Accept", ""):
            return web.json_response(payload)
        parts = urlsplit(request.query["redirect_uri"])
        query = [*parse_qsl(parts.query, keep_blank_values=True), ("code", code), ("state", state)]
        location = urlunsplit(parts._replace(query=urlencode(query)))
        return web.json_response(payload, status=302, headers={"Location": location})

    async def _h_token(self, request: web.Request) -> web.Response:
        admitted = self.oauth.admit(request.headers, request.headers.get("Content-Type", ""), await request.read())
        if isinstance(admitted, Reply):
            return _response(admitted)
        if self.token_delay:
            # Before the grant, so concurrent refreshes of one token really race.
            await asyncio.sleep(self.token_delay)
        with self._lock:
            failure = self._token_failures.popleft() if self._token_failures else None
        if failure is None:
            return _response(self.oauth.answer(admitted))
        status, retry_after = failure
        headers = {"retry-after": str(math.ceil(retry_after))} if retry_after is not None else {}
        if status == 429:
            return _error(429, "rate_limit_error", "Rate limited. Please try again later.", headers)
        return _error(status, "api_error", "Internal server error", headers)

    def _authenticate(self, request: web.Request, headers: dict[str, str]) -> str | web.Response:
        """The account email behind the request's bearer token, or the 4xx the real API gives."""
        with self._lock:
            if self._forced_401 > 0:
                self._forced_401 -= 1
                return _error(401, "authentication_error", EXPIRED_MESSAGE, headers)
        h = request.headers
        if "x-api-key" in h:
            # OAuth tokens only work as a bearer; a leaked x-api-key is a plugin bug.
            return _error(401, "authentication_error", "invalid x-api-key", headers)
        auth = h.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return _error(401, "authentication_error", "x-api-key header is required", headers)
        betas = {b.strip() for b in ",".join(h.getall("anthropic-beta", [])).split(",")}
        if OAUTH_BETA not in betas:
            return _error(401, "authentication_error", "OAuth authentication is currently not supported.", headers)
        if not h.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required", headers)
        token = self.oauth.access_token(auth.removeprefix("Bearer ").strip())
        if token is None:
            return _error(401, "authentication_error", "Invalid bearer token", headers)
        if token.expires_at <= time.time():
            return _error(401, "authentication_error", EXPIRED_MESSAGE, headers)
        if not INFERENCE_SCOPES & set(token.scope.split()):
            return _error(403, "permission_error", SCOPE_MESSAGE, headers)
        return token.email

    def _unknown_model(self, model: str, email: str) -> bool:
        if not self.enforce_models:
            return False
        with self._lock:
            hidden = model in self._hidden.get(email, set())
        return hidden or catalog.find(model) is None

    async def _admit(self, request: web.Request, headers: dict[str, str],
                     required: tuple[tuple[str, type], ...]) -> tuple[str, dict[str, Any]] | web.Response:  # fmt: skip
        """Auth, a JSON object body with the ``required`` fields, a model this account may use."""
        email = self._authenticate(request, headers)
        if isinstance(email, web.Response):
            return email
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", "body is not valid JSON", headers)
        if not isinstance(body, dict):
            return _error(400, "invalid_request_error", "body must be a JSON object", headers)
        for name, kind in required:
            if not isinstance(body.get(name), kind):
                return _error(400, "invalid_request_error", f"{name}: Field required", headers)
        if self._unknown_model(body["model"], email):
            return _error(404, "not_found_error", f"model: {body['model']}", headers)
        return email, body

    async def _h_messages(self, request: web.Request) -> web.StreamResponse:
        self.messages_count += 1
        headers = {"request-id": "req_" + secrets.token_hex(12)}
        admitted = await self._admit(request, headers, (("model", str), ("messages", list), ("max_tokens", int)))
        if isinstance(admitted, web.Response):
            return admitted
        email, body = admitted
        model = body["model"]
        family = catalog.family(model)
        if self.require_claude_code_system and family != "haiku" and not replies.has_identity(body.get("system")):
            # The 2026 identity gate: a bare 429 "Error", no retry-after, no ratelimit headers.
            return _error(429, "rate_limit_error", "Error", headers)
        now = time.time()
        with self._lock:
            account = self._account(email)
            rejection = account.refusing(family, now)
            limited = limits.rejected_headers(account, rejection, now) if rejection else None
            allowed = limits.allowed_headers(account, now)
            refusal = self._refusals.get(email) or self._refusals.get(None)
        if limited is not None:
            return _error(429, "rate_limit_error", limits.QUOTA_MESSAGE, {**headers, **limited})
        if refusal is not None:
            status, kind, message = REFUSALS[refusal]
            # Billing refusals come from the account's state: they carry its headers; the rest do not.
            extra = allowed if refusal in ("extra_usage", "third_party") else {}
            return _error(status, kind, message, {**headers, **extra})
        headers.update(allowed)
        with self._lock:
            message = replies.build_message(body, self._cache)
        if not body.get("stream"):
            return web.json_response(message, headers=headers)
        return await self._stream(request, message, headers)

    async def _h_count_tokens(self, request: web.Request) -> web.Response:
        headers = {"request-id": "req_" + secrets.token_hex(12)}
        admitted = await self._admit(request, headers, (("model", str), ("messages", list)))
        if isinstance(admitted, web.Response):
            return admitted
        return web.json_response({"input_tokens": replies.count_tokens(admitted[1])}, headers=headers)

    def _visible(self, email: str) -> list[catalog.Model]:
        with self._lock:
            hidden = set(self._hidden.get(email, set()))
        return [m for m in catalog.served() if m.id not in hidden]

    @staticmethod
    def _model_json(model: catalog.Model) -> dict[str, Any]:
        return {"type": "model", "id": model.id, "display_name": model.display_name, "created_at": model.created_at}

    async def _h_models(self, request: web.Request) -> web.Response:
        headers = {"request-id": "req_" + secrets.token_hex(12)}
        email = self._authenticate(request, headers)
        if isinstance(email, web.Response):
            return email
        models = self._visible(email)
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return _error(400, "invalid_request_error", "limit: Input should be between 1 and 1000", headers)
        ids = [m.id for m in models]
        after, before = request.query.get("after_id"), request.query.get("before_id")
        for name, cursor in (("after_id", after), ("before_id", before)):
            if cursor is not None and cursor not in ids:
                return _error(400, "invalid_request_error", f"{name}: unknown model id {cursor}", headers)
        if before is not None:  # the page just before the cursor (newer models)
            end = ids.index(before)
            page, has_more = models[max(0, end - limit) : end], end - limit > 0
        else:
            start = ids.index(after) + 1 if after is not None else 0
            page, has_more = models[start : start + limit], start + limit < len(models)
        return web.json_response({
            "data": [self._model_json(m) for m in page], "has_more": has_more,
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
        }, headers=headers)  # fmt: skip

    async def _h_model(self, request: web.Request) -> web.Response:
        headers = {"request-id": "req_" + secrets.token_hex(12)}
        email = self._authenticate(request, headers)
        if isinstance(email, web.Response):
            return email
        wanted = request.match_info["model_id"]
        model = next((m for m in self._visible(email) if m.id == wanted), None)
        if model is None:
            return _error(404, "not_found_error", f"model: {wanted}", headers)
        return web.json_response(self._model_json(model), headers=headers)

    async def _stream(self, request: web.Request, message: dict[str, Any], headers: dict[str, str]) -> web.StreamResponse:
        response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
        request[_RECORD].status = 200
        await response.prepare(request)
        for event in replies.stream_events(message):
            await response.write(replies.sse(event))
        await response.write_eof()
        return response

    # -- control ------------------------------------------------------------------------------

    async def _h_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _h_fake_authorize(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            code, state = self.authorize(str(body["authorize_url"]), body.get("email"))
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": "invalid_request", "error_description": f"bad authorize request: {exc}"}, status=400)
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
        """One JSON object of knobs and actions. Unknown keys, profiles and refusal kinds are
        refused before anything changes; a malformed action spec fails where it is applied."""
        actions = {"expire_all_access_tokens", "expire_access_token", "force_401_next", "rate_limit_email",
                   "rate_limit_token", "reset_in", "profile", "clear_rate_limits", "fail_next_token_requests",
                   "reset_records", "usage", "hide_model", "show_model", "refuse", "clear_refusals",
                   "end_refresh_lifetime"}  # fmt: skip
        unknown = set(body) - actions - set(_CONTROL_KNOBS)
        if unknown:
            raise KeyError(f"unknown control key(s): {', '.join(sorted(unknown))}")
        if "profile" in body:
            limits.profile_name(str(body["profile"]))
        if "refuse" in body and body["refuse"] is not None:
            spec = body["refuse"] if isinstance(body["refuse"], dict) else {"kind": body["refuse"]}
            if spec.get("kind") not in REFUSALS:
                raise ValueError(f"unknown refusal {spec.get('kind')!r}; one of {', '.join(REFUSALS)}")
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
                self.rate_limit_token(str(body[target]), float(body.get("reset_in", 60)), str(body.get("profile", "five_hour")))
        if body.get("clear_rate_limits"):
            self.clear_rate_limits()
        if "usage" in body:  # {"email" or "token": …, "five_hour": 0.8, "seven_day": …, "overage_in_use": true}
            spec = dict(body["usage"])
            who = str(spec.pop("email", None) or spec.pop("token"))
            self.set_usage(who, **spec)
        for action, method in (("hide_model", self.hide_model), ("show_model", self.show_model)):
            if action in body:  # {"email" or "token": …, "model": …}
                spec = body[action]
                method(str(spec.get("email") or spec["token"]), str(spec["model"]))
        if body.get("clear_refusals") or ("refuse" in body and body["refuse"] is None):
            self.clear_refusals()
        if "refuse" in body and body["refuse"] is not None:  # "extra_usage" or {"kind": …, "email": …}
            spec = body["refuse"] if isinstance(body["refuse"], dict) else {"kind": body["refuse"]}
            self.refuse(str(spec["kind"]), spec.get("email") or spec.get("token"))
        if "end_refresh_lifetime" in body:  # true (every account) or an email
            target = body["end_refresh_lifetime"]
            self.end_refresh_lifetime(None if target is True else str(target))
        if "fail_next_token_requests" in body:
            spec = body["fail_next_token_requests"]
            spec = spec if isinstance(spec, dict) else {"n": spec}
            self.fail_next_token_requests(int(spec["n"]), int(spec.get("status", 500)), spec.get("retry_after"))
        if body.get("reset_records"):
            self.reset_records()


__all__ = ["CLAUDE_CODE_SYSTEM", "OAUTH_BETA", "REFUSALS", "FakeAnthropic", "RecordedRequest", "s256"]
