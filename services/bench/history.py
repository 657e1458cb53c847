"""A synthetic but realistic event history for benchmarks.

Thousands of Dataplanes across hundreds of services: first every Dataplane registers, then
the log is a mix of health flips (40 %), re-registrations with changed ports (15 %),
deregistrations and re-registrations (25 %), MeshService edits (10 %) and new Dataplanes
(10 %, while the fleet is below its size, which so stays near `dataplanes`). Deterministic
for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

from events import (
    AnyEvent,
    Dataplane,
    DataplaneDeregistered,
    DataplaneRegistered,
    Mesh,
    MeshApplied,
    MeshService,
    MeshServiceApplied,
    encode_event,
    resource_subject,
)
from events.readiness import readiness_change
from events.resources import (
    DataplaneNetworking,
    Health,
    Inbound,
    MeshServicePort,
    MeshServiceSelector,
    MeshServiceSpec,
)

__all__ = ["Logged", "logged", "synthetic_history"]

_START_MS = 1_760_000_000_000

Logged = tuple[str, bytes, int]
"""An event as the command path appends it: its subject, its bytes, and the sequence its
`Meshlog-Readiness-Of` header names (0: none)."""


def logged(history: Iterable[tuple[str, AnyEvent]], first_seq: int = 1) -> list[Logged]:
    """`history` as the command path appends it to a stream whose next sequence is
    `first_seq`: each readiness change says of which event it is one
    (`CommandHandler.execute`, events.readiness)."""
    last: dict[str, tuple[int, AnyEvent]] = {}
    out: list[Logged] = []
    for seq, (subject, event) in enumerate(history, start=first_seq):
        previous = last.get(subject)
        last[subject] = (seq, event)
        readiness_of = (previous[0] if previous is not None
                        and readiness_change(previous[1], event) else 0)
        out.append((subject, encode_event(event), readiness_of))
    return out


def _dataplane(mesh: str, i: int, service: str, port: int, ready: bool) -> Dataplane:
    return Dataplane(mesh=mesh, name=f"{service}-{i}", networking=DataplaneNetworking(
        address=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
        inbound=[Inbound(port=port, name="main", protocol="http",
                         tags={"kuma.io/service": service, "version": f"v{i % 3}"},
                         health=None if ready else Health(ready=False))]))


def synthetic_history(events: int, *, services: int = 300, dataplanes: int = 3000,
                      seed: int = 1) -> Iterator[tuple[str, AnyEvent]]:
    """(subject, event) pairs, `events` of them."""
    rng = random.Random(seed)
    mesh = "default"
    at = _START_MS
    emitted = 0

    def emit(subject: str, event: AnyEvent) -> tuple[str, AnyEvent]:
        nonlocal emitted
        emitted += 1
        return subject, event

    yield emit(resource_subject("Mesh", None, mesh), MeshApplied(at=at, mesh=Mesh(name=mesh)))
    live = _LiveSet()
    gone: list[int] = []
    next_id = 0
    names = [f"svc-{s:03d}" for s in range(services)]
    while emitted < events:
        at += rng.randint(1, 50)
        choice = rng.random()
        if next_id < dataplanes or not live or (choice < 0.10 and len(live) < dataplanes):
            # new Dataplanes while the fleet is below its size; it stays near `dataplanes`
            i, next_id = next_id, next_id + 1
            live.put(i, (names[i % services], 8080, True))
        elif choice < 0.50:
            i = live.pick(rng)
            service, port, ready = live[i]
            live.put(i, (service, port, not ready))
        elif choice < 0.65:
            i = live.pick(rng)
            service, port, ready = live[i]
            live.put(i, (service, 8080 if port != 8080 else 8081, ready))
        elif choice < 0.90:
            if gone and rng.random() < 0.5:
                i = gone.pop(rng.randrange(len(gone)))
                live.put(i, (names[i % services], 8080, True))
            else:
                i = live.pick(rng)
                service = live.pop(i)[0]
                gone.append(i)
                yield emit(resource_subject("Dataplane", mesh, f"{service}-{i}"),
                           DataplaneDeregistered(at=at, mesh=mesh, name=f"{service}-{i}"))
                continue
        else:
            service = rng.choice(names)
            ms = MeshService(mesh=mesh, name=f"{service}-api", spec=MeshServiceSpec(
                selector=MeshServiceSelector(dataplane_tags={"kuma.io/service": service}),
                ports=[MeshServicePort(port=rng.choice((80, 8080)), target_port="main",
                                       app_protocol="http")]))
            yield emit(resource_subject("MeshService", mesh, ms.name),
                       MeshServiceApplied(at=at, meshservice=ms))
            continue
        service, port, ready = live[i]
        dp = _dataplane(mesh, i, service, port, ready)
        yield emit(resource_subject("Dataplane", mesh, dp.name),
                   DataplaneRegistered(at=at, dataplane=dp))


class _LiveSet:
    """Dataplanes currently registered: O(1) put, pop and uniform random pick."""

    def __init__(self) -> None:
        self._values: dict[int, tuple[str, int, bool]] = {}
        self._ids: list[int] = []
        self._index: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> tuple[str, int, bool]:
        return self._values[i]

    def put(self, i: int, value: tuple[str, int, bool]) -> None:
        if i not in self._values:
            self._index[i] = len(self._ids)
            self._ids.append(i)
        self._values[i] = value

    def pop(self, i: int) -> tuple[str, int, bool]:
        position = self._index.pop(i)
        last = self._ids.pop()
        if last != i:
            self._ids[position] = last
            self._index[last] = position
        return self._values.pop(i)

    def pick(self, rng: random.Random) -> int:
        return self._ids[rng.randrange(len(self._ids))]
