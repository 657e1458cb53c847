"""Where a zone finds a Mesh: in its own log, on its own subject (a standalone control plane)
or on global's (a zone of a multi-zone deployment, where Mesh belongs to global and reaches
the zone through its source of global's stream)."""

from __future__ import annotations

from events.commands.handler import CommandHandler, Current
from events.subjects import GLOBAL_ZONE, resource_subject

__all__ = ["current_mesh"]


async def current_mesh(handler: CommandHandler, name: str, zone: str) -> Current:
    """The last record of Mesh `name` as `zone`'s command side sees it: its own subject's if
    it has one, else global's."""
    own = await handler.current(resource_subject("Mesh", None, name, zone))
    if own.seq or zone == GLOBAL_ZONE:
        return own
    return await handler.current(resource_subject("Mesh", None, name, GLOBAL_ZONE))
