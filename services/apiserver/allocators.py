"""ClusterIP and NodePort allocation for Services (filled in by the allocator work)."""

from __future__ import annotations

from typing import Any

from services.apiserver import context


async def allocate(ctx: context.Request, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Give a Service its cluster IP(s) and node ports (create), keep them (update)."""
    return None


async def release(ctx: context.Request, obj: dict[str, Any]) -> None:
    """Free what a deleted Service held."""
    return None
