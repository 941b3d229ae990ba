"""Callbacks that each do one thing the plugin's hook does, for a static-key proxy (bench.overhead_parts).

Registered in a baseline proxy they price that one step: a deployment hook at all, a
per-call HTTP client, the router-cooldown exemption, the identity line added in the hook.
"""

from __future__ import annotations

from typing import Any

import httpx
from litellm.integrations.custom_logger import CustomLogger
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

from litellm_claude_oauth import litellm_api
from litellm_claude_oauth.identity import add_identity
from litellm_claude_oauth.settings import DEFAULT_SYSTEM_PROMPT


class DeploymentHook(CustomLogger):
    """A deployment hook that returns the call's kwargs unchanged."""

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any]:
        return self.change(kwargs, str(getattr(call_type, "value", call_type)))

    def change(self, kwargs: dict[str, Any], call_type: str) -> dict[str, Any]:
        return kwargs


class OwnClient(DeploymentHook):
    """Hands LiteLLM one shared client per call, as the plugin does (without an auth flow)."""

    def __init__(self) -> None:
        super().__init__()
        self._client: AsyncHTTPHandler | None = None

    def change(self, kwargs: dict[str, Any], call_type: str) -> dict[str, Any]:
        if self._client is None:
            self._client = AsyncHTTPHandler(timeout=httpx.Timeout(600.0, connect=10.0))
        kwargs["client"] = self._client
        return kwargs


class CooldownExemption(DeploymentHook):
    def change(self, kwargs: dict[str, Any], call_type: str) -> dict[str, Any]:
        router = litellm_api.proxy_router()
        model_id = (kwargs.get("model_info") or {}).get("id")
        deployment = router.get_model_info(id=str(model_id)) if router is not None and model_id else None
        litellm_api.exempt_from_router_cooldown(kwargs, deployment)
        return kwargs


class IdentityLine(DeploymentHook):
    def change(self, kwargs: dict[str, Any], call_type: str) -> dict[str, Any]:
        add_identity(kwargs, DEFAULT_SYSTEM_PROMPT, call_type)
        return kwargs


hook = DeploymentHook()
client = OwnClient()
cooldown = CooldownExemption()
identity = IdentityLine()
