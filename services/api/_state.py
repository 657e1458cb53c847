"""What every API route reads: the `ApiState` kept in the Litestar app's state, and its typed
accessor (Litestar's `State` holds values of any type)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import msgspec
from litestar import Litestar, Request
from litestar.datastructures import State

from events.bus.sources import SourceState
from events.commands import Commands
from projections import ReadModelStore
from services.api.auth import ApiAuth

if TYPE_CHECKING:  # proxy_inspector's routes read this state: no import cycle at run time
    from services.api.proxy_inspector import ProxyInspector

__all__ = ["ApiRequest", "ApiState", "ReadModelSwap", "api_state", "app_state",
           "await_projection"]

ApiRequest: TypeAlias = Request[Any, Any, State]
"""The requests of meshlog's routes; `request.user` is the caller (`services.api.auth.User`),
set by the app's guard."""

_KEY = "meshlog"


class ReadModelSwap(Protocol):
    """The blue/green swap of the read models (services.runtime.readmodels)."""

    async def swap(self, url: str) -> int:
        """Swap the live read models to `url`; return the sequence it was caught up to."""
        ...


class ApiState(msgspec.Struct):
    commands: Commands
    store: ReadModelStore
    """Replaced in one assignment by a blue/green swap (services.runtime.readmodels)."""
    projection_wait_s: float
    readmodels: ReadModelSwap | None = None
    """The swappable read models, in `meshlog up` only."""
    projectors: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None
    """Who leads among `meshlog up --projectors N`'s contenders (each one's role, holder,
    fencing token), for `GET /_admin/projectors`; None when there is no lease."""
    inspector: ProxyInspector | None = None
    """Insights and gateway requests over NATS (services.api.proxy_inspector); None without NATS."""
    auth: ApiAuth = msgspec.field(default_factory=ApiAuth)
    """Who calls, and the token keys (services.api.auth)."""
    sources: Callable[[], Awaitable[list[SourceState]]] | None = None
    """What nats-server knows of the event stream's sources (events.bus.sources), for the
    ZoneInsights of a multi-zone deployment (services.api.zones); None: no NATS."""


def app_state(state: ApiState) -> State:
    """The Litestar app state holding `state`."""
    return State({_KEY: state})


def api_state(app: Litestar) -> ApiState:
    """The `ApiState` of an app made by `services.api.app.create_app`."""
    state = app.state[_KEY]
    if not isinstance(state, ApiState):
        raise TypeError(f"app.state[{_KEY!r}] is a {type(state).__name__}, not an ApiState: "
                        "make the app with services.api.app.create_app")
    return state


async def await_projection(state: ApiState, seq: int) -> bool:
    """Wait (bounded) until the read models include `seq`: read-your-writes for clients."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.projection_wait_s
    delay = 0.005
    while await state.store.checkpoint() < seq:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True
