"""A logging callback that writes every kwarg LiteLLM hands to callbacks, for tests/e2e/test_security.py.

Stands in for any third-party logger (S3, GCS, HTTP dumpers) that serialises raw kwargs.
"""

from __future__ import annotations

import json
import os
from typing import Any

from litellm.integrations.custom_logger import CustomLogger


class DumpEverything(CustomLogger):
    def _write(self, tag: str, kwargs: dict[str, Any]) -> None:
        with open(os.environ["KWARGS_DUMP"], "a") as fh:
            fh.write(tag + " " + json.dumps(kwargs, default=repr) + "\n")

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._write("success", kwargs)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._write("failure", kwargs)


dump = DumpEverything()
