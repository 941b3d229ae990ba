"""The httpx auth flow every request to an OAuth deployment goes through.

Modelled on httpx's own ``Auth.auth_flow`` generators: it sees the final request
LiteLLM built, sets the credential, and decides from each response whether to
re-send:

* 401 with an expired/revoked token → refresh (keyed on the token that failed, so a
  burst of 401s costs one refresh) and re-send; at most two refreshes per request,
  because the first may only fetch a token another worker stored, which the server
  may have revoked too;
* 429 that is about quota → rest the account (or one model family of it) until the
  window resets, and with a pool re-send on the next usable account; any other 429
  (identity gate, long-context or fast-mode credits, server throttling) and 529 are
  returned as they are: resting accounts would not help;
* a request that carries the client's own Anthropic credential is sent unchanged and
  never retried, refreshed or rested: it is not ours.

The real access token is set here, on the wire request, and nowhere else: LiteLLM's
``api_key`` holds only a placeholder, so logging callbacks never see a token (audit M7),
and it is only ever sent to a trusted origin (audit H3).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

import httpx

from . import metrics
from .alerts import Condition
from .errors import ClaudeOAuthError
from .manager import TokenManager
from .ratelimit import cooldown_for_429
from .refusals import classify
from .routing import AllAccountsCoolingDown, Pool
from .tokens import TokenSet

log = logging.getLogger(__name__)

# Starts with sk-ant-oat so LiteLLM sends Bearer auth and the OAuth beta; never valid upstream.
PLACEHOLDER = "sk-ant-oat01-litellm-claude-oauth-placeholder"
_MAX_REFRESHES = 2


@dataclass(slots=True)
class Attempt:
    """What the deployment hook decided for one attempt, handed to the flow through a ContextVar.

    The hook and the HTTP call run in the same task, so the value set in the hook is the
    one the flow reads; a retry runs the hook again and sets it anew. Never changed once
    set (not ``frozen``: that makes every request pay an ``object.__setattr__`` per field).
    """

    account: str | None  # the stored account chosen (None: the route's default)
    family: str | None = None  # model family, for model-scoped cooldowns
    client_credential: tuple[str, str] | None = None  # (header, value) the client brought, to forward as is
    session: str | None = None  # conversation key, so a pool keeps it on one account
    call_id: str | None = None  # LiteLLM's id of the client request, the same on its retries
    tokens: TokenSet | None = field(default=None, repr=False)  # ``account``'s, fetched by the hook moments ago


current_attempt: ContextVar[Attempt | None] = ContextVar("claude_oauth_attempt", default=None)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str | httpx.URL) -> str:
    """``scheme://host:port``, by httpx's parser for request URLs and configured bases alike, so the two compare."""
    parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)  # a request's URL is parsed already
    return f"{parsed.scheme}://{parsed.host}:{parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 0)}"


@functools.lru_cache(maxsize=256)
def base_origin(base: str) -> str:
    """:func:`origin` of a configured base: the same few strings on every request, parsed once each."""
    return origin(base)


class UntrustedUpstream(ClaudeOAuthError):
    http_status = 400


def _bearer(request: httpx.Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ").strip()


def _use(request: httpx.Request, access_token: str) -> None:
    request.headers["authorization"] = f"Bearer {access_token}"


_WATCHED = frozenset((b"user-agent", b"authorization", b"x-api-key"))
_PLACEHOLDER_BYTES = PLACEHOLDER.encode()


def _text(value: bytes) -> str:
    # httpx encodes a str it is given as UTF-8 (on a request none of whose headers were read as str).
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _sent(headers: httpx.Headers) -> dict[bytes, bytes]:
    """The request's user-agent and credential headers, by lower-case name, read in one pass.

    From the raw list, on purpose: httpx's first str lookup on a new request decodes every
    header to pick an encoding, and each lookup scans them all again.
    """
    found: dict[bytes, bytes] = {}
    for key, value in headers.raw:
        name = key.lower()
        if name in _WATCHED:
            found[name] = found[name] + b", " + value if name in found else value  # as httpx joins repeats
    return found


def explain(response: httpx.Response, message: str) -> None:
    """Put our one-line explanation in an (already read) upstream error, keeping its status and shape.

    The client sees LiteLLM's rendering of the upstream body; without this it would read a
    bare "Error" for the identity gate, or "Invalid bearer token" for an account that
    needs a new login.
    """
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body["error"]["message"] = message
    else:
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
    content = json.dumps(body).encode()
    # httpx has no public way to replace a read body; _content is what .content/.text/.json() return.
    response._content = content
    response.headers["content-length"] = str(len(content))
    response.headers.pop("content-encoding", None)


def _carries_foreign_credential(sent: dict[bytes, bytes]) -> bool:
    """The client's own login or API key, forwarded by LiteLLM (its /v1/messages does that itself).

    ``sent``: from :func:`_sent`.
    """
    bearer = sent.get(b"authorization", b"").removeprefix(b"Bearer ").strip()
    if bearer and bearer != _PLACEHOLDER_BYTES:
        return True
    return bool(sent.get(b"x-api-key"))


@dataclass
class _Retries:
    """What one request has tried so far."""

    account: str
    refreshes: int = 0
    rested: set[str] = field(default_factory=set)


class RefusalMemo:
    """Refusals that the same request will get again, by LiteLLM call id, for a short while.

    LiteLLM's router retries a 429 (and 5xx) by re-running the whole call; for an
    identity-gate or extra-usage refusal that only repeats the refused request upstream.
    The hook answers such retries from here instead.
    """

    TTL = 120.0

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._entries: dict[str, tuple[float, int, str]] = {}

    def remember(self, call_id: str | None, status: int, message: str) -> None:
        if not call_id:
            return
        now = self._clock()
        if len(self._entries) > 1000:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        self._entries[call_id] = (now + self.TTL, status, message)

    def get(self, call_id: str | None) -> tuple[int, str] | None:
        # Not popped: LiteLLM retries at two levels (router and client wrapper), each
        # re-running the hook; every one of them must get the answer.
        entry = self._entries.get(call_id) if call_id else None
        if entry is None or entry[0] < self._clock():
            return None
        return entry[1], entry[2]


class ClaudeOAuthFlow(httpx.Auth):
    def __init__(
        self,
        manager: TokenManager,
        account: str | None,
        pool: Pool | None,
        trusts: Callable[[str], bool],
        refused: RefusalMemo | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.manager = manager
        self.account = account
        self.pool = pool
        self._trusts = trusts
        self._refused = refused or RefusalMemo()
        self._clock = clock

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        attempt = current_attempt.get() or Attempt(account=self.account)
        sent = _sent(request.headers)
        # Say who we are (LiteLLM would say only "litellm/<ver>"); never a Claude Code user agent.
        agent = self.manager.settings.user_agent
        current_agent = _text(sent.get(b"user-agent", b""))
        if not current_agent.startswith(agent):
            request.headers["user-agent"] = f"{agent} {current_agent}".strip()
        target = origin(request.url)
        if not self._trusts(target):
            # A client-chosen api_base must never receive a Claude token.
            request.headers.pop("authorization", None)
            request.headers.pop("x-api-key", None)
            raise UntrustedUpstream(
                f"refusing to send Claude OAuth credentials to {target}: "
                "not CLAUDE_API_BASE or an api_base of the proxy's own config"
            )
        if attempt.client_credential is not None:
            header, value = attempt.client_credential
            request.headers.pop("authorization", None)
            request.headers.pop("x-api-key", None)
            request.headers[header] = value
        if attempt.client_credential is not None or _carries_foreign_credential(sent):
            # The client's own credential: forwarded once, as is, never refreshed, rested or retried.
            metrics.passthrough_request()
            yield request
            return

        if attempt.account is not None and attempt.tokens is not None:
            account, tokens = attempt.account, attempt.tokens
        elif self.pool is not None and attempt.account is None:
            account, tokens = await self.pool.next_tokens(family=attempt.family, session=attempt.session)
        else:
            account = self.manager.account_id(attempt.account)
            tokens = await self.manager.get_tokens(account)
        if b"x-api-key" in sent:  # only ours goes upstream; a re-send reuses this request, so once is enough
            del request.headers["x-api-key"]
        _use(request, tokens.access)

        state: _Retries | None = None  # only an error needs one: most requests end at the first answer
        while True:
            response = yield request
            # Every answer carries the account's rate-limit windows, 200s too: no I/O here.
            self.manager.quotas.note(account, response.headers)
            metrics.upstream_status(account, response.status_code)
            if response.status_code < 400:
                return
            await response.aread()
            state = state or _Retries(account=account)
            access = await self._next_access(response, request, attempt, state)
            if access is None:
                return
            account = state.account  # a pool may have moved the request to another account
            _use(request, access)

    async def _next_access(
        self, response: httpx.Response, request: httpx.Request, attempt: Attempt, state: _Retries
    ) -> str | None:
        """The access token to re-send the request with, or None to give the client this answer."""
        refusal = classify(response.status_code, response.headers, response.content)
        if refusal is not None:
            if refusal.ban_like:
                await self.manager.health.suspend(state.account, refusal.message)
                self.manager.alerts.notify_soon(Condition.ACCOUNT_REFUSED, state.account, refusal.message)
            if not refusal.retryable:
                self._refused.remember(attempt.call_id, response.status_code, refusal.message)
            explain(response, refusal.message)
            return None
        if response.status_code == 401:
            return await self._after_401(response, request, state)
        if response.status_code == 429:
            return await self._after_429(response, attempt, state)
        return None

    async def _after_401(self, response: httpx.Response, request: httpx.Request, state: _Retries) -> str | None:
        if state.refreshes >= _MAX_REFRESHES:
            return None
        try:
            tokens = await self.manager.force_refresh(state.account, stale_access=_bearer(request) or None)
        except ClaudeOAuthError as exc:
            log.warning("Claude OAuth: refresh after 401 failed: %s", exc)
            explain(response, str(exc))
            return None
        state.refreshes += 1
        log.info("Claude OAuth: upstream 401, retrying with a refreshed token (%d/%d)", state.refreshes,
                 _MAX_REFRESHES)
        return tokens.access

    async def _after_429(self, response: httpx.Response, attempt: Attempt, state: _Retries) -> str | None:
        cooldown = cooldown_for_429(response.headers, response.text, self._clock())
        if cooldown is None:
            return None  # not about this account's quota: resting it or another would not help
        await self.manager.health.cool_down(state.account, cooldown)
        state.rested.add(state.account)
        if self.pool is None:
            response.headers["retry-after"] = str(cooldown.retry_after(self._clock()))
            return None
        try:
            account, tokens = await self.pool.next_tokens(
                frozenset(state.rested), family=attempt.family, session=attempt.session
            )
        except AllAccountsCoolingDown as exc:
            response.headers["retry-after"] = str(exc.retry_after)
            self.manager.alerts.notify_soon(Condition.POOL_COOLING_DOWN, "pool", str(exc))
            return None
        except ClaudeOAuthError:
            return None
        log.info("Claude OAuth: '%s' is rate-limited, retrying on '%s'", state.account, account)
        state.account, state.refreshes = account, 0
        return tokens.access
