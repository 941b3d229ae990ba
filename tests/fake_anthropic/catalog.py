"""The model ids the fake serves: the ones Anthropic's API serves in late 2026, and nothing else.

Source: research/protocol-2026.md §2.4 (platform.claude.com *Model IDs and versioning*,
*Models overview* and the model pages). From the 4.6 generation on ids are dateless;
``claude-opus-4-6-20260205`` and ``claude-opus-4-7-20260416`` are LiteLLM cost-map keys,
not Anthropic ids, and the retired ids below answer 404 like every unknown one.
``created_at`` is the release date where the research gives one; otherwise it only keeps
the list in release order (the API lists newest first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime


@dataclass(frozen=True)
class Model:
    id: str
    display_name: str
    released: date
    retires: date | None = None  # served until the end of the day before

    @property
    def created_at(self) -> str:
        return f"{self.released.isoformat()}T00:00:00Z"

    def served_on(self, day: date) -> bool:
        return self.released <= day and (self.retires is None or day < self.retires)

    @property
    def family(self) -> str:
        return family(self.id)


MODELS: tuple[Model, ...] = (
    Model("claude-haiku-5-5", "Claude Haiku 5.5", date(2026, 10, 7)),
    Model("claude-opus-5-5", "Claude Opus 5.5", date(2026, 9, 30)),
    Model("claude-sonnet-5-5", "Claude Sonnet 5.5", date(2026, 9, 30)),
    Model("claude-fable-5-1", "Claude Fable 5.1", date(2026, 9, 15)),
    Model("claude-fable-5", "Claude Fable 5", date(2026, 7, 28)),
    Model("claude-opus-5", "Claude Opus 5", date(2026, 7, 24)),
    Model("claude-sonnet-5", "Claude Sonnet 5", date(2026, 7, 24)),
    Model("claude-opus-4-8", "Claude Opus 4.8", date(2026, 5, 28)),
    Model("claude-opus-4-7", "Claude Opus 4.7", date(2026, 4, 16)),
    Model("claude-sonnet-4-6", "Claude Sonnet 4.6", date(2026, 2, 17)),
    Model("claude-opus-4-6", "Claude Opus 4.6", date(2026, 2, 5)),
    Model("claude-opus-4-5-20251101", "Claude Opus 4.5", date(2025, 11, 24)),
    Model("claude-haiku-4-5-20251001", "Claude Haiku 4.5", date(2025, 10, 15)),
    Model("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", date(2025, 9, 29), retires=date(2026, 11, 30)),
)

# Gone, with the day they went: requests for them get the same 404 as an invented id.
RETIRED: dict[str, date] = {
    "claude-opus-4-1-20250805": date(2026, 8, 5),
    "claude-opus-4-20250514": date(2026, 6, 15),
    "claude-sonnet-4-20250514": date(2026, 6, 15),
    "claude-3-7-sonnet-20250219": date(2026, 2, 19),
    "claude-3-5-haiku-20241022": date(2026, 2, 19),
}

_FAMILIES = ("opus", "sonnet", "haiku", "fable", "mythos")


def family(model_id: str) -> str:
    """``claude-opus-4-8`` → ``opus``; an id without a known family word → ``""``."""
    words = model_id.lower().replace("_", "-").split("-")
    return next((w for w in words if w in _FAMILIES), "")


def today() -> date:
    return datetime.now(UTC).date()


def served(day: date | None = None) -> tuple[Model, ...]:
    """The models the API serves on ``day`` (default: today, UTC), newest first."""
    day = day or today()
    return tuple(m for m in MODELS if m.served_on(day))


def find(model_id: str, day: date | None = None) -> Model | None:
    return next((m for m in served(day) if m.id == model_id), None)
