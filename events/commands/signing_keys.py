"""Token signing keys on the command path: which key signs, rotation, retirement.

Kuma keeps a signing key as a secret, `dataplane-token-signing-key-<mesh>-<serial>` (or
`user-token-signing-key-<serial>`, `zone-token-signing-key-<serial>`): the newest serial
signs, any known serial verifies; rotating is creating the next serial, and deleting the old
secret later refuses every token it signed. Here a key is an event on a subject of its own
(`events.subjects.signing_key_subject`):

- `SigningKeyCreated`, appended with expected sequence 0, so two API replicas racing to make
  the same serial make it once (the loser reads again and takes the winner's key);
- later perhaps `SigningKeyRetired` on the same subject, which takes the key out of service.

The serials of a (purpose, mesh) are consecutive from 1: a rotation makes the highest serial
the log holds (retired ones included) plus one. The newest serial is never retired (a 409),
so some key always signs, the highest serial in the log is always live, and "is serial N still
the newest?" is one read of serial N+1's subject: a key this process opened is checked so
before it signs, and a rotation made by another replica is followed at its next token.

A mesh's dataplane-token keys go with the Mesh (Kuma deletes them with it;
`events.commands.meshes`): the callers pass `since`, the sequence at which the Mesh's current
life began, and a key created before it is not the mesh's any more (the fold removed its row,
or never made one). A Mesh created again gets the next serial, never one of its earlier
lives' (their subjects are taken for ever), so no kid ever names two keys: a token of an
earlier life names a kid no gateway holds. "The newest serial" is the current life's, and
the first token of a life creates its key as serial 1 did: at expected sequence 0 on the next
serial's subject, so two replicas racing make one key.

A key's private half is sealed with the control plane's secret key under the purpose
`signingkey:<purpose>/<mesh or _>/<serial>` (`sealing_purpose`): a sealed blob copied to
another key's event does not open. Global's zone-token keys name global in their kid
(`events.identity.key_id`: every zone verifies them) but are sealed as before, so a key made
before kids named their issuer still opens. It is opened here only, for signing; read models
hold the public half alone.
"""

from __future__ import annotations

import logging

from msgspec import Struct

from events.commands.handler import Append, CommandHandler, Current, Decision, Keep, current_of
from events.errors import Conflict, NotFound, UndecodableEvent
from events.event_types import SigningKeyCreated, SigningKeyRetired, TokenPurpose
from events.identity.sealing import SecretKey
from events.identity.tokens import (
    KeyId,
    SigningKey,
    generate_key_pair,
    key_id,
    load_private_key,
)
from events.subjects import signing_key_subject, signing_keys_filter

__all__ = ["OpenedKey", "Rotated", "SigningKeys", "sealing_purpose"]

log = logging.getLogger("meshlog.tokens")

_RETRIES = 1
"""A conflict on a key's subject means another replica wrote it: read it once more."""


def sealing_purpose(kid: KeyId) -> str:
    """The associated data a signing key's private half is sealed with: a blob copied to
    another key's event does not open."""
    return f"signingkey:{kid.local_form}"


class OpenedKey(Struct, frozen=True):
    """A key this process opened, with the sequence of its `SigningKeyCreated` (a reader of
    read models folded up to there knows whether it was retired since)."""

    key: SigningKey
    seq: int


class Rotated(Struct, frozen=True):
    """What a rotation left: the newest key, the sequence of its `SigningKeyCreated`, and
    whether this call made it (False: another request made that serial a moment before)."""

    kid: KeyId
    seq: int
    appended: bool


class SigningKeys:
    def __init__(self, handler: CommandHandler, *, zone: str, secret_key: SecretKey) -> None:
        self._handler = handler
        self._zone = zone
        self._secret = secret_key
        self._newest: dict[tuple[TokenPurpose, str | None], OpenedKey] = {}
        """The newest key of each (purpose, mesh) as this process last saw it."""
        self._opened: dict[str, OpenedKey] = {}
        """Every key this process opened, by kid (a kid's key never changes)."""

    async def newest(self, purpose: TokenPurpose, mesh: str | None, at: int, *,
                     since: int = 0) -> SigningKey:
        """The key that signs `purpose` tokens of `mesh` now: the newest serial the log
        holds created after `since` (the sequence where the mesh's current life began), the
        next serial created if it holds none. Raises `SealedSecretError` if the secret
        key is not the one that sealed it, `EventLogUnavailable` without the log."""
        cached = self._newest.get((purpose, mesh))
        if cached is not None and cached.seq > since and (await self._handler.current(
                signing_key_subject(purpose, mesh, cached.key.kid.serial + 1, self._zone)
                )).seq == 0:
            return cached.key
        keys = await self._keys(purpose, mesh)
        live: tuple[SigningKeyCreated, int] | None = None  # the highest serial: never retired
        for current in keys.values():
            if isinstance(current.event, SigningKeyCreated) and current.seq > since and (
                    live is None or current.event.serial > live[0].serial):
                live = (current.event, current.seq)
        if live is None:
            created, seq, _ = await self._create(purpose, mesh, max(keys, default=0) + 1, at)
            live = (created, seq)
        return self._open(*live).key

    def opened(self, kid: str) -> OpenedKey | None:
        """The key `kid`, if this process opened it (made or signed with it)."""
        return self._opened.get(kid)

    async def rotate(self, purpose: TokenPurpose, mesh: str | None, at: int) -> Rotated:
        """Create the next serial of (purpose, mesh), which signs from now on; tokens of the
        older serials keep verifying until they are retired."""
        keys = await self._keys(purpose, mesh)
        serial = max(keys, default=0) + 1
        created, seq, appended = await self._create(purpose, mesh, serial, at)
        opened = self._open(created, seq)
        if appended:
            log.info("rotated the signing key of %s: %s signs from now on", _scope(
                purpose, mesh), opened.key.kid)
        return Rotated(kid=opened.key.kid, seq=seq, appended=appended)

    async def retire(self, purpose: TokenPurpose, mesh: str | None, serial: int, at: int, *,
                     since: int = 0, newest_signs: bool = True) -> tuple[int, bool]:
        """Take the key `serial` of (purpose, mesh) out of service: (the sequence that says
        so, whether this call appended it). Retiring it again appends nothing. Raises
        `NotFound` for a serial the log never held or that went with an earlier life of the
        mesh (created before `since`), `Conflict` for the newest one while it signs
        (`newest_signs`: a zone's own zone-token keys sign nothing, so all may go)."""
        kid = key_id(purpose, mesh, serial, zone=self._zone)
        every = await self._keys(purpose, mesh)
        # a retired key's last record is its retirement, made in the life it belonged to
        keys = {s: current for s, current in every.items() if current.seq > since}
        if serial not in keys:
            held = ", ".join(str(s) for s in sorted(keys)) or "none yet"
            gone = (f"; it went with mesh {mesh}, deleted since it was created"
                    if serial in every else "")
            raise NotFound(f"signing key {kid} does not exist (the serials of "
                           f"{_scope(purpose, mesh)}: {held}){gone}")
        subject = signing_key_subject(purpose, mesh, serial, self._zone)
        if newest_signs and serial == max(keys):
            raise Conflict(subject, keys[serial].seq, (
                f"signing key {kid} is the newest of {_scope(purpose, mesh)}: it signs every "
                f"new token, so it cannot be retired; rotate first (a new serial {serial + 1} "
                f"then signs), then retire serial {serial}"))

        def decide(current: Current) -> Decision:
            if isinstance(current.event, SigningKeyRetired):
                return Keep()
            if not isinstance(current.event, SigningKeyCreated):
                raise UndecodableEvent(current.seq, subject, "not a signing key this code "
                                                             "can read")
            return Append(SigningKeyRetired(at=at, purpose=purpose, mesh=mesh, serial=serial))

        outcome = await self._handler.execute(subject, decide, retries=_RETRIES)
        appended = outcome.appended and not outcome.duplicate
        if appended:
            log.info("retired the signing key %s: the tokens it signed are refused", kid)
        return outcome.seq, appended

    async def _keys(self, purpose: TokenPurpose, mesh: str | None) -> dict[int, Current]:
        """Every serial of (purpose, mesh) the log holds, with its subject's last record (a
        `SigningKeyCreated`, or its `SigningKeyRetired`)."""
        records = await self._handler.log.latest(signing_keys_filter(mesh, self._zone))
        keys = {}
        for record in records:
            current = current_of(record)
            event = current.event
            if (isinstance(event, SigningKeyCreated | SigningKeyRetired)
                    and event.purpose == purpose and event.mesh == mesh):
                keys[event.serial] = current
        return keys

    async def _create(self, purpose: TokenPurpose, mesh: str | None, serial: int, at: int
                      ) -> tuple[SigningKeyCreated, int, bool]:
        """Key `serial`, made by this call or, when another replica made it first, the one
        it made: (its event, its sequence, whether this call appended it)."""
        kid = key_id(purpose, mesh, serial, zone=self._zone)
        subject = signing_key_subject(purpose, mesh, serial, self._zone)
        private, public = generate_key_pair()
        event = SigningKeyCreated(at=at, purpose=purpose, mesh=mesh, serial=serial,
                                  public_key=public, private_key=self._secret.seal(
                                      private, purpose=sealing_purpose(kid)))

        def decide(current: Current) -> Decision:
            return Append(event) if current.seq == 0 else Keep()

        outcome = await self._handler.execute(subject, decide, retries=_RETRIES)
        if outcome.appended:
            log.info("created the signing key %s", kid)
            return event, outcome.seq, True
        existing = outcome.previous.event
        if not isinstance(existing, SigningKeyCreated):
            raise UndecodableEvent(outcome.previous.seq, subject,
                                   "not a signing key this code can read")
        return existing, outcome.previous.seq, False

    def _open(self, created: SigningKeyCreated, seq: int) -> OpenedKey:
        """The private half of `created` opened (once per kid), now the newest of its
        (purpose, mesh) as this process sees it."""
        kid = key_id(created.purpose, created.mesh, created.serial, zone=self._zone)
        opened = self._opened.get(str(kid))
        if opened is None:
            private = self._secret.open(created.private_key, purpose=sealing_purpose(kid))
            opened = OpenedKey(key=SigningKey(kid, load_private_key(private)), seq=seq)
            self._opened[str(kid)] = opened
        newest = self._newest.get((kid.purpose, kid.mesh))
        if newest is None or newest.key.kid.serial <= kid.serial:
            self._newest[(kid.purpose, kid.mesh)] = opened
        return opened


def _scope(purpose: TokenPurpose, mesh: str | None) -> str:
    """`dataplane-token keys of mesh default`, `user-token keys`: what a message names."""
    return f"the {purpose} keys" + (f" of mesh {mesh}" if mesh is not None else "")
