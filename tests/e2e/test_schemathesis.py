"""Property-based tests of /auth/claude/oauth/* with schemathesis, against the real proxy.

One proxy (file store under tmp_path, the default account logged in through the CLI)
serves the module. Its own OpenAPI document, fetched from /openapi.json with the master
key and cut down to the plugin's paths, drives schemathesis:

* with the admin key, for every operation, schemathesis' coverage cases (boundary values,
  wrong types, missing fields, undeclared methods) and 50 generated requests (valid and
  schema-violating): no 5xx, responses match the schema where it documents them,
  schema-violating input is refused with a 4xx that carries a JSON ``detail``, and no
  response contains ``sk-ant-``;
* without a key and with several kinds of wrong key: the same kinds of request (coverage
  cases and 10 generated per operation) all answer 401 and reach neither the token
  endpoint nor the store;
* a valid non-admin key is refused too, 403 for a well-formed request (LiteLLM cannot mint
  such a key without a database, so a second proxy authenticates through a
  ``custom_auth`` function);
* hand-written oversized and malformed bodies: 4xx with a ``detail``, and /status still
  answers afterwards.

Generation is bounded and reproducible: derandomized Hypothesis, no example database, no
schemathesis.toml; the coverage cases are deterministic by construction. Schemathesis' pytest integration (``schemathesis.pytest.from_fixture``)
is not used: it reads ``Node._nodeid``, which pytest 9 removed, so the module drives
Hypothesis with ``APIOperation.as_strategy`` itself.

The bugs this module found (a 500 on long non-ASCII account ids, an off-schema 422,
undocumented error statuses, parse errors before the key check) are pinned as
regression tests at the end.
"""

from __future__ import annotations

import base64
import json
import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.fake_anthropic import FakeAnthropic

from .harness import MASTER_KEY, ROOT, Proxy, login_via_cli, proxy_env, start_proxy, stop_proxy

pytestmark = pytest.mark.e2e

PREFIX = "/auth/claude/oauth"
ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}
# In schema order; /logout last, as it may log the default account out.
OPERATIONS = [
    "GET /start",
    "POST /exchange",
    "GET /status",
    "POST /refresh",
    "GET /metrics",
    "POST /logout",
]
# Schema-valid bodies for the hand-written requests.
VALID_BODY = {"/exchange": {"code": "not-a-real-code"}, "/refresh": {}, "/logout": {"account": "nobody"}}

# Hypothesis drives generation (derandomize: the same requests on every run); the coverage
# cases are deterministic by construction. No schemathesis.toml is read, nothing is cached.
SCHEMATHESIS_CONFIG = {"seed": 20240611, "cache": {"enabled": False}}
FUZZ = settings(
    max_examples=50,  # per operation, valid and schema-violating requests together
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# --- a second proxy with non-admin keys --------------------------------------------------

# Roles a LiteLLM key can carry; only PROXY_ADMIN may manage Claude accounts.
NON_ADMIN_KEYS = {
    "sk-fuzz-internal-user": "internal_user",
    "sk-fuzz-internal-viewer": "internal_user_viewer",
    "sk-fuzz-admin-viewer": "proxy_admin_viewer",
    "sk-fuzz-team": "team",
    "sk-fuzz-customer": "customer",
}
VIRTUAL_ADMIN_KEY = "sk-fuzz-virtual-admin"
CUSTOM_AUTH = textwrap.dedent(
    f"""
    from fastapi import HTTPException
    from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

    ROLES = {{**{NON_ADMIN_KEYS!r}, {VIRTUAL_ADMIN_KEY!r}: "proxy_admin"}}


    async def user_api_key_auth(request, api_key):
        role = ROLES.get(api_key)
        if role is None:
            raise HTTPException(status_code=401, detail="unknown key")
        return UserAPIKeyAuth(api_key=api_key, user_id="fuzz-" + role, user_role=LitellmUserRoles(role))
    """
)


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(fake: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    fake.access_ttl = 3600
    yield from logged_in_proxy(fake, tmp)


@pytest.fixture(scope="module")
def custom_auth_proxy(fake: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The same config plus ``custom_auth``: LiteLLM keys of any role, without a database."""
    tmp = tmp_path_factory.mktemp("schemathesis-custom-auth")
    config = yaml.safe_load((ROOT / "config.oauth.yaml").read_text())
    config.setdefault("general_settings", {})["custom_auth"] = "fuzz_custom_auth.user_api_key_auth"
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp / "fuzz_custom_auth.py").write_text(CUSTOM_AUTH)  # LiteLLM imports it from the config's directory
    yield from logged_in_proxy(fake, tmp, config=tmp / "config.yaml")


def logged_in_proxy(fake: FakeAnthropic, tmp: Path, config: Path = ROOT / "config.oauth.yaml") -> Iterator[Proxy]:
    running = start_proxy(proxy_env(fake, tmp), tmp / "proxy.log", config=config)
    try:
        login_via_cli(running, fake)
        yield running
    finally:
        stop_proxy(running)


@pytest.fixture(scope="module")
def api_schema(proxy: Proxy) -> Any:
    config = schemathesis.Config.from_dict(SCHEMATHESIS_CONFIG)
    loaded = schemathesis.openapi.from_url(f"{proxy.url}/openapi.json", headers=ADMIN, timeout=60, config=config)
    return loaded.include(path_regex=f"^{re.escape(PREFIX)}/")


@pytest.fixture
def admin(proxy: Proxy) -> Iterator[httpx.Client]:
    with proxy.client() as client:
        yield client


@pytest.fixture
def logged_in(proxy: Proxy, fake: FakeAnthropic, admin: httpx.Client) -> None:
    """The default account is logged in (fuzzing /logout may have logged it out)."""
    if not default_status(admin)["logged_in"]:
        login_via_cli(proxy, fake)
    assert default_status(admin)["valid"]


def default_status(client: httpx.Client) -> dict[str, Any]:
    response = client.get(f"{PREFIX}/status", params={"account": "default"})
    assert response.status_code == 200, response.text
    return response.json()["accounts"][0]


def stored(client: httpx.Client) -> dict[str, Any]:
    """What the store holds for the default account, minus the clock."""
    clock = {"expires_in_seconds", "refresh_expires_in_seconds", "quota"}
    return {k: v for k, v in default_status(client).items() if k not in clock}


def operation(api_schema: Any, label: str) -> Any:
    method, path = label.split()
    return api_schema[PREFIX + path][method]


def generated(op: Any) -> st.SearchStrategy:
    """Schema-valid and schema-violating requests for one operation."""
    strategies = [op.as_strategy(GenerationMode.POSITIVE)]
    if op.query or op.body:  # /metrics takes no input to violate
        strategies.append(op.as_strategy(GenerationMode.NEGATIVE))
    return st.one_of(strategies)


def coverage_cases(api_schema: Any, op: Any) -> list[Any]:
    """Schemathesis' deterministic coverage phase: boundary values, wrong types, undeclared methods."""
    config = api_schema.config.generation_for(operation=op, phase="coverage")
    return list(api_schema.iter_coverage_cases(op, generation_modes=list(GenerationMode), generation_config=config))


def is_undeclared_method(case: Any) -> bool:
    return case.method.upper() != case.operation.method.upper()


def explain(case: Any, response: Any, headers: dict[str, str]) -> str:
    return f"{case.as_curl_command(headers=headers)}\n-> {response.status_code} {response.text[:500]}"


# --- checks -----------------------------------------------------------------------------


def no_token_leak(ctx: Any, response: Any, case: Any) -> None:
    assert "sk-ant-" not in response.text, "a token leaked into a response body"
    assert "sk-ant-" not in json.dumps(response.headers), "a token leaked into a response header"


def errors_carry_a_detail(ctx: Any, response: Any, case: Any) -> None:
    if 400 <= response.status_code < 500:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/json"), f"{response.status_code} answered as {content_type!r}"
        detail = response.json().get("detail")
        assert detail, f"{response.status_code} without a detail: {response.text[:300]}"


ADMIN_CHECKS: list[Callable[..., Any]] = [
    # Any 5xx fails, the 503 of a token store outage included: this store is healthy.
    not_a_server_error,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    # Schema-violating input must be refused with a 4xx.
    negative_data_rejection,
    # An undeclared method gets 405 with an Allow header.
    unsupported_method,
    no_token_leak,
    errors_carry_a_detail,
]


def check_admin(case: Any) -> None:
    response = case.call(headers=ADMIN)
    case.validate_response(response, checks=ADMIN_CHECKS, headers=ADMIN)


# --- the schema -------------------------------------------------------------------------


def test_schema_holds_exactly_the_plugin_operations(api_schema: Any) -> None:
    labels = [f"{op.ok().method.upper()} {op.ok().path.removeprefix(PREFIX)}" for op in api_schema.get_all_operations()]
    assert sorted(labels) == sorted(OPERATIONS)  # the static /ui page stays out of the API


# --- no admin key -----------------------------------------------------------------------

UNAUTHENTICATED = {
    "no-key": {},
    "wrong-bearer": {"Authorization": "Bearer sk-not-the-master-key"},
    "master-key-prefix": {"Authorization": f"Bearer {MASTER_KEY[:-1]}"},
    "master-key-plus-one": {"Authorization": f"Bearer {MASTER_KEY}0"},
    "empty-bearer": {"Authorization": "Bearer "},
    "basic-auth-with-master-key": {"Authorization": "Basic " + base64.b64encode(f"{MASTER_KEY}:".encode()).decode()},
    "wrong-x-litellm-api-key": {"x-litellm-api-key": "sk-not-the-master-key"},
}


def check_refused(case: Any, keys: dict[str, dict[str, str]], statuses: set[int], base_url: str | None = None) -> None:
    """Send the case once with each set of headers: each must be refused with one of ``statuses``."""
    for name, headers in keys.items():
        response = case.call(headers=headers, base_url=base_url)
        where = f"[{name}] {explain(case, response, headers)}"
        if is_undeclared_method(case):
            # Routing answers before any route's dependencies run; nothing is disclosed.
            assert response.status_code == 405, where
            continue
        assert response.status_code in statuses, where
        if response.status_code == 401:
            assert response.headers.get("www-authenticate") == ["Bearer"], where
        assert response.json()["detail"], where
        no_token_leak(None, response, case)


def fuzz_refused(
    api_schema: Any, label: str, keys: dict[str, dict[str, str]], statuses: set[int], base_url: str | None = None
) -> None:
    """Coverage cases and 10 generated requests for one operation, refused with every key."""
    op = operation(api_schema, label)
    for case in coverage_cases(api_schema, op):
        check_refused(case, keys, statuses, base_url)

    @settings(FUZZ, max_examples=10)
    @given(case=generated(op))
    def run(case: Any) -> None:
        check_refused(case, keys, statuses, base_url)

    run()


@pytest.mark.parametrize("label", OPERATIONS)
def test_without_an_admin_key_every_request_is_401(
    api_schema: Any, label: str, fake: FakeAnthropic, admin: httpx.Client
) -> None:
    token_requests, before = len(fake.token_requests()), stored(admin)
    fuzz_refused(api_schema, label, UNAUTHENTICATED, {401})
    assert len(fake.token_requests()) == token_requests, "an unauthenticated request reached the token endpoint"
    assert stored(admin) == before, "an unauthenticated request changed the stored account"


@pytest.mark.parametrize("label", OPERATIONS)
def test_a_valid_non_admin_key_is_refused(
    api_schema: Any, label: str, custom_auth_proxy: Proxy, fake: FakeAnthropic
) -> None:
    """The same requests, sent to the custom_auth proxy with keys of every non-admin role."""
    keys = {role: {"Authorization": f"Bearer {key}"} for key, role in NON_ADMIN_KEYS.items()}
    with custom_auth_proxy.client(VIRTUAL_ADMIN_KEY) as client:
        token_requests, before = len(fake.token_requests()), stored(client)
        # 403; or 401 "invalid admin key" when LiteLLM's own auth fails on the request itself (it parses
        # the body: a multipart Content-Type without a boundary raises, and require_admin maps every
        # exception from user_api_key_auth to 401).
        fuzz_refused(api_schema, label, keys, {401, 403}, base_url=custom_auth_proxy.url)
        assert len(fake.token_requests()) == token_requests, "a non-admin request reached the token endpoint"
        assert stored(client) == before, "a non-admin request changed the stored account"


@pytest.mark.parametrize("key", list(NON_ADMIN_KEYS), ids=list(NON_ADMIN_KEYS.values()))
def test_a_valid_non_admin_key_gets_exactly_403_on_valid_requests(custom_auth_proxy: Proxy, key: str) -> None:
    with custom_auth_proxy.client(key) as client:
        for label in OPERATIONS:
            method, path = label.split()
            response = client.request(method, PREFIX + path, json=VALID_BODY.get(path))
            assert response.status_code == 403, (key, label, response.text)
            assert "admin" in response.json()["detail"]


def test_a_proxy_admin_virtual_key_is_accepted(custom_auth_proxy: Proxy) -> None:
    with custom_auth_proxy.client(VIRTUAL_ADMIN_KEY) as client:
        for label in ("GET /start", "GET /status", "POST /refresh", "GET /metrics"):
            method, path = label.split()
            response = client.request(method, PREFIX + path, json=VALID_BODY.get(path))
            assert response.status_code == 200, (label, response.text)
    with custom_auth_proxy.client("sk-fuzz-unknown") as client:
        assert client.get(f"{PREFIX}/status").status_code == 401  # a key custom_auth refuses


# --- admin key: generated requests ------------------------------------------------------


@pytest.mark.parametrize("label", OPERATIONS)
def test_admin_coverage_cases_never_fail_or_leak(api_schema: Any, label: str, logged_in: None) -> None:
    cases = coverage_cases(api_schema, operation(api_schema, label))
    assert cases
    for case in cases:
        check_admin(case)


@pytest.mark.parametrize("label", OPERATIONS)
def test_admin_generated_requests_never_fail_or_leak(api_schema: Any, label: str, logged_in: None) -> None:
    @FUZZ
    @given(case=generated(operation(api_schema, label)))
    def run(case: Any) -> None:
        check_admin(case)

    run()


def test_the_proxy_still_works_after_fuzzing(proxy: Proxy, logged_in: None, admin: httpx.Client) -> None:
    assert httpx.get(f"{proxy.url}/health/liveliness", timeout=10).status_code == 200
    refreshed = admin.post(f"{PREFIX}/refresh")
    assert refreshed.status_code == 200 and refreshed.json()["valid"], refreshed.text
    assert admin.get(f"{PREFIX}/metrics").json()["refreshes"] >= 1


# --- admin key: oversized and malformed bodies ------------------------------------------


def nested(depth: int) -> bytes:
    return ('{"code": ' + "[" * depth + "]" * depth + "}").encode()


JSON = "application/json"
# name -> (body, content type, routes it is malformed for)
ALL = ("/exchange", "/refresh", "/logout")
MALFORMED: dict[str, tuple[bytes, str, tuple[str, ...]]] = {
    "code-2mb": (json.dumps({"code": "x" * (2 << 20)}).encode(), JSON, ALL),
    "state-10kb": (json.dumps({"code": "x", "state": "s" * 10240}).encode(), JSON, ALL),
    "code-4097": (json.dumps({"code": "x" * 4097}).encode(), JSON, ("/exchange",)),
    "nested-array-10k": (b"[" * 10000 + b"]" * 10000, JSON, ALL),
    "nested-object-10k": (b'{"a":' * 10000 + b"1" + b"}" * 10000, JSON, ALL),
    "nested-in-code-10k": (nested(10000), JSON, ALL),
    "huge-integer": (b'{"code": ' + b"9" * 5000 + b"}", JSON, ALL),
    "invalid-utf8": (b'{"code": "\xff\xfe\xfd"}', JSON, ALL),
    "invalid-utf8-account": (b'{"account": "\xc3\x28"}', JSON, ALL),
    "lone-surrogate": (b'{"code": "\\ud800", "account": "\\udc00"}', JSON, ALL),
    "truncated": (b'{"code": "abc', JSON, ALL),
    "not-json": (b"code=abc", JSON, ALL),
    "nan": (b'{"code": NaN}', JSON, ALL),
    "array": (b'["code", "x"]', JSON, ALL),
    "number": (b"42", JSON, ALL),
    "string": (b'"code"', JSON, ALL),
    "true": (b"true", JSON, ALL),
    "null": (b"null", JSON, ("/exchange",)),  # {account?} bodies are optional: null is valid there
    "empty-object": (b"{}", JSON, ("/exchange",)),
    "code-not-a-string": (b'{"code": {"a": 1}}', JSON, ("/exchange",)),
    "unknown-field": (b'{"code": "x", "admin": true}', JSON, ALL),
    "account-traversal": (b'{"code": "x", "account": "../../etc/passwd"}', JSON, ALL),
    "account-slash": (b'{"code": "x", "account": "a/b"}', JSON, ALL),
    "account-dotdot-backslash": (b'{"code": "x", "account": "..\\\\..\\\\x"}', JSON, ALL),
    "account-65": (json.dumps({"code": "x", "account": "a" * 65}).encode(), JSON, ALL),
    "account-10kb": (json.dumps({"code": "x", "account": "a" * 10240}).encode(), JSON, ALL),
    "account-empty": (b'{"code": "x", "account": ""}', JSON, ALL),
    "account-nul": (b'{"code": "x", "account": "a\\u0000b"}', JSON, ALL),
    "account-newline": (b'{"code": "x", "account": "a\\nb"}', JSON, ALL),
    "account-emoji": (json.dumps({"code": "x", "account": "key\U0001f511"}).encode(), JSON, ALL),
    "account-rtl-override": (json.dumps({"code": "x", "account": "a\u202eb"}).encode(), JSON, ALL),
    "account-zero-width": (json.dumps({"code": "x", "account": "a\u200db"}).encode(), JSON, ALL),
    "account-number": (b'{"code": "x", "account": 7}', JSON, ALL),
    "text-plain": (b'{"code": "x"}', "text/plain", ALL),
    "form-urlencoded": (b"code=x&account=default", "application/x-www-form-urlencoded", ALL),
    "multipart": (
        b'--b\r\nContent-Disposition: form-data; name="code"\r\n\r\nx\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
        ALL,
    ),
    "xml": (b"<code>x</code>", "application/xml", ALL),
    "no-content-type-invalid": (b"{not json", "", ALL),
}
MALFORMED_CASES = [
    pytest.param(route, name, id=f"{route[1:]}-{name}")
    for name, (_, _, routes) in MALFORMED.items()
    for route in routes
]


@pytest.mark.parametrize(("route", "name"), MALFORMED_CASES)
def test_malformed_body_is_a_4xx_with_a_detail(proxy: Proxy, admin: httpx.Client, route: str, name: str) -> None:
    body, content_type, _ = MALFORMED[name]
    headers = {**ADMIN, "Content-Type": content_type} if content_type else ADMIN
    with httpx.Client(base_url=proxy.url, timeout=60) as client:
        request = client.build_request("POST", PREFIX + route, content=body, headers=headers)
        if not content_type:
            request.headers.pop("Content-Type", None)
        response = client.send(request)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith(JSON), response.headers
    assert response.json()["detail"], response.text[:500]
    assert "sk-ant-" not in response.text
    assert admin.get(f"{PREFIX}/status").status_code == 200


VALID_UNICODE_ACCOUNTS = {
    # str.isalnum() is Unicode-aware, so these are valid account ids: any answer but a 5xx.
    "latin": "été",
    "cyrillic-homoglyph": "dеfault",  # the "е" is U+0435
    "fullwidth": "ａｄｍｉｎ",
    "cjk-64": "中" * 64,
    "dots": "..",
}


@pytest.mark.parametrize("route", ALL)
@pytest.mark.parametrize("account", list(VALID_UNICODE_ACCOUNTS.values()), ids=list(VALID_UNICODE_ACCOUNTS))
def test_unusual_but_valid_accounts_never_fail(admin: httpx.Client, route: str, account: str) -> None:
    for request in (
        {"json": {**VALID_BODY[route], "account": account}},
        {"params": {"account": account}, "json": {"code": "x"} if route == "/exchange" else None},
    ):
        response = admin.post(PREFIX + route, **request)
        assert response.status_code < 500 and response.json(), (request, response.status_code, response.text)
        if response.status_code == 200 and route == "/logout":
            assert response.json() == {"account": account, "logged_out": False}


def test_the_proxy_still_works_after_malformed_bodies(proxy: Proxy, logged_in: None, admin: httpx.Client) -> None:
    assert default_status(admin)["valid"]
    assert admin.post(f"{PREFIX}/refresh", json={"account": "default"}).status_code == 200


def test_no_token_in_the_proxy_log(proxy: Proxy) -> None:
    leaked = sorted(set(re.findall(r"sk-ant-o[ar]t01-[A-Za-z0-9_\-]{6,}", proxy.log())))
    assert leaked == []


# --- regressions: bugs this module found, now fixed ---------------------------------------


ASTRAL_ACCOUNT = "\U0001d400" * 64  # MATHEMATICAL BOLD CAPITAL A: a letter, 4 bytes in UTF-8


@pytest.mark.parametrize("account", [ASTRAL_ACCOUNT, "dеfault", "été", "..", "."])
def test_non_ascii_and_dot_accounts_are_refused_cleanly(admin: httpx.Client, account: str) -> None:
    """Once a 500: a 64-letter astral name made the refresh lock's file name exceed 255 bytes."""
    for method, route, kwargs in [
        ("GET", "/start", {"params": {"account": account}}),
        ("POST", "/refresh", {"params": {"account": account}}),
        ("POST", "/refresh", {"json": {"account": account}}),
        ("POST", "/exchange", {"json": {"code": "x", "account": account}}),
    ]:
        response = admin.request(method, PREFIX + route, **kwargs)
        assert response.status_code == 422, (route, response.text)


@pytest.mark.parametrize("label", ["GET /start", "GET /status", "POST /refresh", "POST /logout"])
def test_invalid_account_query_422_matches_the_schema(api_schema: Any, label: str) -> None:
    case = operation(api_schema, label).Case(query={"account": "../x"})
    response = case.call(headers=ADMIN)
    assert response.status_code == 422, response.text
    case.validate_response(response, checks=[response_schema_conformance], headers=ADMIN)


UNDOCUMENTED = {
    "exchange-unknown-state-400": ("POST /exchange", {"body": {"code": "x", "state": "unknown"}}, ADMIN, 400),
    "refresh-not-logged-in-404": ("POST /refresh", {"query": {"account": "nobody"}}, ADMIN, 404),
    "status-without-key-401": ("GET /status", {}, {}, 401),
    "metrics-wrong-key-401": ("GET /metrics", {}, {"Authorization": "Bearer sk-wrong"}, 401),
}


@pytest.mark.parametrize("name", list(UNDOCUMENTED))
def test_error_statuses_are_documented(api_schema: Any, name: str) -> None:
    label, data, headers, status = UNDOCUMENTED[name]
    case = operation(api_schema, label).Case(**data)
    response = case.call(headers=headers)
    assert response.status_code == status, response.text
    case.validate_response(response, checks=[status_code_conformance, response_schema_conformance], headers=headers)


def test_unparseable_body_without_a_key_is_401(proxy: Proxy) -> None:
    """The key is checked before the body is parsed: a stranger learns nothing from parse errors."""
    answers = {}
    with proxy.client(key=None) as client:
        for route in ALL:
            for name in ("truncated", "invalid-utf8", "nested-array-10k"):
                body, content_type, _ = MALFORMED[name]
                response = client.post(PREFIX + route, content=body, headers={"Content-Type": content_type})
                answers[f"{route} {name}"] = response.status_code
    assert set(answers.values()) == {401}, answers
