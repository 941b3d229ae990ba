"""Anthropic's OAuth service in miniature: authorize, codes, PKCE, grants, refresh rotation, lifetimes.

One state machine for every fake token endpoint: the aiohttp fake (``server.py``) and the
respx ``token_endpoint`` fixture (``tests/conftest.py``) both drive it, so unit tests and
end-to-end tests meet the same rules. It knows no HTTP framework: a token request comes in
as (headers, content type, raw body) and leaves as a :class:`Reply`.

What it copies from the live service of late 2026 (research/protocol-2026.md §2.1, §2.3):

* authorize: ``client_id`` must be Claude Code's, ``redirect_uri`` one registered for it
  (the platform and console paste pages, ``http://localhost:<port>/callback``),
  ``code=true``, ``response_type=code``, S256 and a 43-character state; the errors say what
  the real page says ("Redirect URI … is not supported by client.", "Invalid request format").
* token endpoint edge: no ``User-Agent`` → 429 ``rate_limit_error``; ``Python-urllib/*`` →
  403 ``error code: 1010``; ``claude-code/*`` → 429 (HERMES #48534, PR #58178). JSON and
  form-urlencoded bodies are both accepted (claude-code #47754).
* exchange: code single use, 10 minutes, bound to state/client/redirect and the PKCE
  challenge; a client-chosen ``expires_in`` is honoured except with ``user:mcp_servers``.
* refresh: single use (every refresh rotates; the old token →
  ``invalid_grant "Refresh token not found or invalid"``), an absolute refresh lifetime
  counted from the login and never extended (``refresh_token_expires_in``), a refresh's
  own ``expires_in`` ignored, a wider ``scope`` → ``invalid_scope``.
* responses carry ``account{uuid,email_address}`` and ``organization{uuid,name}``.

Thread-safe: the aiohttp loop and the test thread both call in.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping, MutableSet
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
# The paste pages registered for Claude Code's client. Only the platform one is confirmed
# (claude-code #88877, Aug 2026); the console one has conflicting reports (works June 2026,
# "Invalid redirect_uri" March 2026), so both are accepted.
REGISTERED_REDIRECTS = (
    "https://platform.claude.com/oauth/code/callback",
    "https://console.anthropic.com/oauth/code/callback",
)
LOOPBACK_REDIRECT = re.compile(r"http://localhost:[0-9]{1,5}/callback")
KNOWN_SCOPES = frozenset({"user:profile", "user:inference", "user:sessions:claude_code", "user:mcp_servers",
                          "user:file_upload", "org:create_api_key", "user:ccr_inference"})  # fmt: skip
ACCESS_TTL_SECONDS = 28800
REFRESH_TTL_SECONDS = 30 * 86400
CODE_TTL_SECONDS = 600
STATE_LENGTH = 43  # 32 random bytes, base64url: "16-byte states are silently rejected"
INVALID_REFRESH = "Refresh token not found or invalid"
INVALID_FORMAT = "Invalid request format"
_AUTHORIZE_PARAMS = ("client_id", "response_type", "redirect_uri", "scope", "code_challenge",
                     "code_challenge_method", "state")  # fmt: skip

TokenStyle = Literal["random", "serial"]


def s256(verifier: str) -> str:
    """RFC 7636 S256 challenge of a verifier."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


def delegated(holder: str, name: str, *, writable: bool = True) -> property:
    """A property reading (and writing) ``self.<holder>.<name>``: a knob that lives in the OAuth state."""

    def get(self: object) -> Any:
        return getattr(getattr(self, holder), name)

    def put(self: object, value: Any) -> None:
        setattr(getattr(self, holder), name, value)

    return property(get, put if writable else None, doc=f"``{holder}.{name}``")


def redirect_registered(uri: str) -> bool:
    return uri in REGISTERED_REDIRECTS or LOOPBACK_REDIRECT.fullmatch(uri) is not None


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: ``body`` is a JSON value, or a ``str`` sent as text/plain."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_json(self) -> bool:
        return not isinstance(self.body, str)

    def content(self) -> bytes:
        return (json.dumps(self.body) if self.is_json else self.body).encode()

    @property
    def content_type(self) -> str:
        return "application/json" if self.is_json else "text/plain; charset=utf-8"


def oauth_error(error: str, description: str, status: int = 400) -> Reply:
    return Reply(status, {"error": error, "error_description": description})


def api_error(status: int, kind: str, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": kind, "message": message}}, dict(headers or {}))


class AuthorizeError(ValueError):
    """The authorize page refused the request; ``str()`` is the page's own wording."""


@dataclass
class AuthCode:
    """An authorization code. ``None`` fields are not checked (codes planted by unit tests)."""

    challenge: str
    state: str
    client_id: str | None = None
    redirect_uri: str | None = None
    scope: str | None = None
    email: str | None = None
    created_at: float | None = None


@dataclass
class Grant:
    """One login. Its refresh tokens rotate within it; its refresh lifetime is counted from the login."""

    email: str
    client_id: str | None
    scope: str
    refresh_expires_at: float | None


@dataclass
class AccessToken:
    email: str
    scope: str
    expires_at: float


@dataclass(frozen=True)
class TokenRequest:
    """A token request that passed the edge: its grant type and fields."""

    grant_type: str
    body: Mapping[str, Any]


class OAuthState:
    """Codes, grants, live refresh tokens and access tokens of the fake OAuth service."""

    def __init__(
        self,
        *,
        access_ttl: float = ACCESS_TTL_SECONDS,
        refresh_ttl: float | None = REFRESH_TTL_SECONDS,
        report_refresh_ttl: bool = True,
        rotate: bool = True,
        default_email: str = "user@example.com",
        organization_name: str = "Example Org",
        token_style: TokenStyle = "random",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl  # None: refresh tokens never expire
        self.report_refresh_ttl = report_refresh_ttl  # False: omit refresh_token_expires_in, as some answers do
        self.rotate = rotate
        self.next_email = default_email  # sticky: every login until changed
        self.organization_name = organization_name
        self.token_style = token_style
        self.clock = clock
        self.check_user_agent = True
        # Attempts, rejected ones included, so single-flight tests can see duplicates.
        self.exchange_count = 0
        self.refresh_count = 0
        self.codes: dict[str, AuthCode] = {}
        self.grants: dict[str, Grant] = {}
        self.refresh_tokens: dict[str, str] = {}  # live refresh token -> grant id
        self.access_tokens: dict[str, AccessToken] = {}
        self.accounts: dict[str, tuple[str, str]] = {}  # email -> (account uuid, organization uuid)
        self.lock = threading.RLock()
        self._serial = itertools.count(1)

    # -- authorize ------------------------------------------------------------------

    def authorize(self, params: Mapping[str, str], email: str | None = None) -> tuple[str, str]:
        """The person clicking "Authorize": a new code for these query parameters, or AuthorizeError."""
        missing = [k for k in _AUTHORIZE_PARAMS if not params.get(k)]
        if missing:
            raise AuthorizeError(f"Missing {missing[0]} parameter")
        if params["client_id"] != CLIENT_ID:
            # Wording not captured from the live page; the other messages are.
            raise AuthorizeError(f"Invalid client_id {params['client_id']}")
        if not redirect_registered(params["redirect_uri"]):
            raise AuthorizeError(f"Redirect URI {params['redirect_uri']} is not supported by client.")
        unknown = [s for s in params["scope"].split() if s not in KNOWN_SCOPES]
        if unknown:
            raise AuthorizeError(f"Unknown scope: {unknown[0]}")
        if (params.get("code") != "true" or params["response_type"] != "code"
                or params["code_challenge_method"] != "S256" or len(params["state"]) != STATE_LENGTH):  # fmt: skip
            raise AuthorizeError(INVALID_FORMAT)
        code = secrets.token_urlsafe(32)
        with self.lock:
            self.codes[code] = AuthCode(params["code_challenge"], params["state"], params["client_id"],
                                        params["redirect_uri"], params["scope"], email or self.next_email, self.clock())  # fmt: skip
        return code, params["state"]

    # -- the token endpoint -----------------------------------------------------------

    def admit(self, headers: Mapping[str, str], content_type: str, raw: bytes) -> TokenRequest | Reply:
        """The edge in front of the token endpoint, then parsing: a request to grant, or the refusal."""
        lowered = {k.lower(): v for k, v in headers.items()}
        if self.check_user_agent and (refusal := edge_refusal(lowered.get("user-agent"))) is not None:
            return refusal
        body = parse_body(content_type, raw)
        if body is None:
            return api_error(400, "invalid_request_error", INVALID_FORMAT)
        grant_type = body.get("grant_type")
        with self.lock:
            if grant_type == "authorization_code":
                self.exchange_count += 1
            elif grant_type == "refresh_token":
                self.refresh_count += 1
            else:
                return oauth_error("unsupported_grant_type", f"unsupported grant_type: {grant_type!r}")
        return TokenRequest(str(grant_type), body)

    def answer(self, request: TokenRequest) -> Reply:
        with self.lock:
            if request.grant_type == "authorization_code":
                return self._exchange(request.body)
            return self._refresh(request.body)

    def handle(self, headers: Mapping[str, str], content_type: str, raw: bytes) -> Reply:
        admitted = self.admit(headers, content_type, raw)
        return admitted if isinstance(admitted, Reply) else self.answer(admitted)

    def _exchange(self, body: Mapping[str, Any]) -> Reply:
        missing = [k for k in ("code", "state", "client_id", "redirect_uri", "code_verifier") if not body.get(k)]
        if missing:
            return oauth_error("invalid_request", f"missing field(s): {', '.join(missing)}")
        code = self.codes.get(str(body["code"]))
        if code is None:
            return oauth_error("invalid_grant", "Invalid 'code' in request")
        if code.created_at is not None and self.clock() - code.created_at > CODE_TTL_SECONDS:
            return oauth_error("invalid_grant", "Authorization code has expired")
        if body["state"] != code.state:
            return oauth_error("invalid_grant", "Invalid 'state' in request")
        if code.client_id is not None and body["client_id"] != code.client_id:
            return oauth_error("invalid_grant", "Invalid 'client_id' in request")
        if code.redirect_uri is not None and body["redirect_uri"] != code.redirect_uri:
            return oauth_error("invalid_grant", "Invalid 'redirect_uri' in request")
        try:
            verified = s256(str(body["code_verifier"])) == code.challenge
        except UnicodeEncodeError:
            verified = False
        if not verified:
            return oauth_error("invalid_grant", "Invalid 'code_verifier' in request")
        scope = code.scope or "user:inference user:profile"
        access_ttl: float | None = None
        if "expires_in" in body:  # how `claude setup-token` gets its one-year token
            if "user:mcp_servers" in scope.split():
                return oauth_error("invalid_request", "Custom expires_in not allowed for scope 'user:mcp_servers'")
            try:
                access_ttl = float(body["expires_in"])
            except (TypeError, ValueError):
                return oauth_error("invalid_request", "expires_in must be a number")
        del self.codes[str(body["code"])]  # single use
        return Reply(200, self._new_grant(code.email or self.next_email, body["client_id"], scope, access_ttl))

    def _refresh(self, body: Mapping[str, Any]) -> Reply:
        missing = [k for k in ("refresh_token", "client_id") if not body.get(k)]
        if missing:
            return oauth_error("invalid_request", f"missing field(s): {', '.join(missing)}")
        old = str(body["refresh_token"])
        grant_id = self.refresh_tokens.get(old)
        grant = self.grants.get(grant_id) if grant_id is not None else None
        if grant_id is None or grant is None:
            return oauth_error("invalid_grant", INVALID_REFRESH)
        if grant.refresh_expires_at is not None and self.clock() >= grant.refresh_expires_at:
            del self.refresh_tokens[old]
            return oauth_error("invalid_grant", INVALID_REFRESH)
        if grant.client_id is not None and body["client_id"] != grant.client_id:
            return oauth_error("invalid_grant", "Invalid 'client_id' in request")
        scope = grant.scope
        if body.get("scope"):
            scope = str(body["scope"])
            if not set(scope.split()) <= set(grant.scope.split()):
                return oauth_error("invalid_scope", "The requested scope is invalid, unknown, or malformed.")
        if self.rotate:
            del self.refresh_tokens[old]
        # A refresh's own expires_in is ignored (TCR): always the default lifetime.
        return Reply(200, self._tokens_for(grant_id, scope, with_refresh=self.rotate))

    # -- issuing ----------------------------------------------------------------------

    def issue(self, email: str | None = None, scope: str = "user:profile user:inference",
              client_id: str | None = CLIENT_ID) -> dict[str, Any]:  # fmt: skip
        """The token response of a new login, without the browser dance."""
        with self.lock:
            return self._new_grant(email or self.next_email, client_id, scope)

    def _new_grant(self, email: str, client_id: str | None, scope: str, access_ttl: float | None = None) -> dict[str, Any]:
        grant_id = uuid.uuid4().hex
        ends = self.clock() + self.refresh_ttl if self.refresh_ttl is not None else None
        self.grants[grant_id] = Grant(email=email, client_id=client_id, scope=scope, refresh_expires_at=ends)
        return self._tokens_for(grant_id, scope, with_refresh=True, access_ttl=access_ttl)

    def _names(self) -> tuple[str, str]:
        if self.token_style == "serial":  # readable in unit-test assertions: access1/refresh1, …
            n = next(self._serial)
            return f"sk-ant-oat01-access{n}", f"sk-ant-ort01-refresh{n}"
        return "sk-ant-oat01-" + secrets.token_urlsafe(48), "sk-ant-ort01-" + secrets.token_urlsafe(48)

    def _tokens_for(self, grant_id: str, scope: str, with_refresh: bool, access_ttl: float | None = None) -> dict[str, Any]:
        grant = self.grants[grant_id]
        now = self.clock()
        ttl = self.access_ttl if access_ttl is None else access_ttl
        access, refresh = self._names()
        self.access_tokens[access] = AccessToken(email=grant.email, scope=scope, expires_at=now + ttl)
        account_uuid, org_uuid = self.account_ids(grant.email)
        body: dict[str, Any] = {"access_token": access}
        if with_refresh:
            self.refresh_tokens[refresh] = grant_id
            body["refresh_token"] = refresh
        body.update(token_type="Bearer", expires_in=int(ttl) if float(ttl).is_integer() else ttl, scope=scope)
        if with_refresh and self.report_refresh_ttl and grant.refresh_expires_at is not None:
            body["refresh_token_expires_in"] = max(0, math.floor(grant.refresh_expires_at - now))
        body.update(account={"uuid": account_uuid, "email_address": grant.email},
                    organization={"uuid": org_uuid, "name": self.organization_name})  # fmt: skip
        return body

    def account_ids(self, email: str) -> tuple[str, str]:
        with self.lock:
            return self.accounts.setdefault(email, (str(uuid.uuid4()), str(uuid.uuid4())))

    # -- what the Messages API and the tests ask ----------------------------------------

    def access_token(self, token: str) -> AccessToken | None:
        with self.lock:
            return self.access_tokens.get(token)

    def expire_access_token(self, token: str) -> None:
        with self.lock:
            if token in self.access_tokens:
                self.access_tokens[token].expires_at = 0

    def expire_all_access_tokens(self) -> None:
        with self.lock:
            for token in self.access_tokens.values():
                token.expires_at = 0

    def refresh_token_alive(self, token: str | None) -> bool:
        """Would a refresh with this token be granted? Asked without spending it."""
        with self.lock:
            grant = self.grants.get(self.refresh_tokens.get(token or "", ""))
            return grant is not None and (grant.refresh_expires_at is None or self.clock() < grant.refresh_expires_at)

    def end_refresh_lifetime(self, email: str | None = None) -> None:
        """Jump to the absolute end of every grant's refresh tokens (of one email, or all)."""
        with self.lock:
            for grant in self.grants.values():
                if email is None or grant.email == email:
                    grant.refresh_expires_at = self.clock()


def edge_refusal(user_agent: str | None) -> Reply | None:
    """What the edge in front of the token endpoint does with a User-Agent (protocol-2026 §2.1)."""
    agent = (user_agent or "").strip()
    if not agent:
        return api_error(429, "rate_limit_error", "Rate limited. Please try again later.")
    lowered = agent.lower()
    if lowered.startswith("python-urllib/"):
        return Reply(403, "error code: 1010")
    if lowered.startswith("claude-code/"):
        return api_error(429, "rate_limit_error", "Rate limited. Please try again later.")
    return None


def parse_body(content_type: str, raw: bytes) -> dict[str, Any] | None:
    """A JSON or form-urlencoded object body, or None when it is neither."""
    kind = content_type.split(";", 1)[0].strip().lower()
    try:
        if kind == "application/x-www-form-urlencoded":
            return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw)))
        if kind == "application/json" or kind.endswith("+json"):
            data = json.loads(raw)
            return data if isinstance(data, dict) else None
    except (UnicodeDecodeError, ValueError):
        return None
    return None


class CodeView(MutableMapping[str, Any]):
    """``codes`` as unit tests see it: plant ``code -> (challenge, state)``, move codes around."""

    def __init__(self, state: OAuthState) -> None:
        self._state = state

    def __getitem__(self, code: str) -> AuthCode:
        return self._state.codes[code]

    def __setitem__(self, code: str, value: AuthCode | tuple[str, str]) -> None:
        self._state.codes[code] = value if isinstance(value, AuthCode) else AuthCode(challenge=value[0], state=value[1])

    def __delitem__(self, code: str) -> None:
        del self._state.codes[code]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._state.codes))

    def __len__(self) -> int:
        return len(self._state.codes)


class LiveRefreshView(MutableSet[str]):
    """The live refresh tokens as a set: ``clear()`` revokes them all upstream."""

    def __init__(self, state: OAuthState) -> None:
        self._state = state

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self._state.refresh_token_alive(token)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._state.refresh_tokens))

    def __len__(self) -> int:
        return len(self._state.refresh_tokens)

    def add(self, token: str) -> None:
        with self._state.lock:
            if token not in self._state.refresh_tokens:
                grant_id = uuid.uuid4().hex
                self._state.grants[grant_id] = Grant(self._state.next_email, None, "user:profile user:inference", None)
                self._state.refresh_tokens[token] = grant_id

    def discard(self, token: str) -> None:
        with self._state.lock:
            self._state.refresh_tokens.pop(token, None)
