"""The admin token of a data dir (`<data dir>/admin-token`, mode 0600), kept valid by every API
process of that data dir (`meshlog api`, `meshlog up`) while it runs.

The token is `mesh-system:admin`, valid 10 years as Kuma's `admin-user-token`, signed with
the newest user-token key. It is written at the API's first start, and written again
(`ensure_admin_token`) when the file holds one this control plane no longer accepts (another
log, revoked, expired) or one signed with another key than the newest, so a reset log does not
lock its operator out and a rotation does not either.

A rotation of the user-token key can be made through any API replica, each with a data dir of
its own. So every API process follows the log itself (`AdminTokenKeeper.run`): a watch of the
user-token keys' subjects (`meshlog.ev.<zone>.signingkey._.*`, an ordered consumer filtered by
the server, so it is sent a record per rotation or retirement, and a heartbeat while idle),
and each change renews the token if it is no longer signed with the newest serial. The
rotation's `SigningKeyCreated` comes before any retirement of the older serial in the log (the
newest serial cannot be retired), so the renewal starts before the retirement is folded into
any read models. Should a request still arrive with the old token (the retirement folded
while this process was cut off from NATS), the API tells the keeper (`refused`), which renews
then, before the 401 goes back; the CLI reads the file again on a 401 and retries once when
it changed (`services.cli.client`).

Renewals are serialized in the process (the API that rotates renews from its route too, and
the watch sees the same rotation), and each one writes through a temporary file of its own
renamed over the old one (`events.identity.private_files`): a reader gets the old token or
the new one, never half of one. Two processes of one data dir may each write a token, both
valid; the last rename wins, and each process checks again at every change it sees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Final

from events import (
    EventLog,
    MeshlogError,
    Record,
    SigningKeyCreated,
    SigningKeyRetired,
    now_ms,
    signing_keys_filter,
)
from events.commands import TokenCommands, current_of
from events.identity import (
    MAX_VALID_FOR_S,
    USER_TOKEN,
    InvalidToken,
    UserClaims,
    read_header,
    verify,
)
from events.identity.private_files import write_private
from services.api.auth import ADMIN_GROUP
from services.errors import ConfigError

__all__ = ["AdminTokenKeeper", "ensure_admin_token"]

log = logging.getLogger("meshlog.credentials")

_RETRY_S: Final = (1.0, 30.0)
"""After NATS or the file failed the watch: wait the first, doubling up to the second."""


class AdminTokenKeeper:
    """Keeps `path` holding an admin token signed with the newest user-token key."""

    def __init__(self, path: Path, tokens: TokenCommands, event_log: EventLog, *,
                 zone: str) -> None:
        self.path = path
        self._tokens = tokens
        self._log = event_log
        self._filter = signing_keys_filter(None, zone)
        self._lock = asyncio.Lock()

    async def renew(self) -> bool:
        """Write a new admin token if the file's will not do; True when one was written."""
        async with self._lock:  # the rotating route and the watch: one check, one write
            return await ensure_admin_token(self.path, self._tokens)

    async def refused(self, kid: str) -> None:
        """A request's token was refused because its key `kid` is not in service: if that is
        the key of the file's token, renew it now (the CLI then retries with the new one).
        Work for a stranger's request only while the file is stale: once renewed, its kid is
        another one."""
        if kid != _kid_of(self.path):
            return
        await self._renew_refused(f"a request with a token of the key {kid} was refused")

    async def revoked(self, token: str) -> None:
        """A request's token was refused as revoked: if it is the file's (an operator revoked
        this API's admin token), renew it now, as for a retired key (`refused`)."""
        try:
            if token != self.path.read_text().strip():
                return
        except OSError:
            return
        await self._renew_refused("the admin token was refused as revoked")

    async def _renew_refused(self, why: str) -> None:
        log.info("%s: renewing the admin token in %s", why, self.path)
        try:
            await self.renew()
        except (MeshlogError, OSError) as exc:  # the request's answer is 401 all the same
            log.warning("cannot renew the admin token in %s: %s", self.path, exc)

    async def run(self) -> None:
        """Follow the log's user-token keys and renew at every change, until cancelled. NATS
        or the file failing is logged and tried again, never the end of the API."""
        next_seq: int | None = None
        delay = _RETRY_S[0]
        while True:
            try:
                if next_seq is None:  # first: from now on, and whatever came before
                    start = await self._log.last_seq() + 1
                    await self.renew()
                    next_seq = start
                async for batch in self._log.follow(self._filter, next_seq):
                    if any(_user_token_key(record) for record in batch):
                        await self.renew()
                    next_seq = batch[-1].seq + 1  # after the renewal: a failed one is redone
                    delay = _RETRY_S[0]
            except Exception as exc:
                # nats-py's own errors too (the reader publishes its pull requests raw:
                # OutboundBufferLimitError while NATS is away): this task shares the API's
                # task group, whose end would be the process's
                log.warning("cannot keep the admin token in %s up to date (%r); trying again "
                            "in %.0f s", self.path, exc, delay,
                            exc_info=not isinstance(exc, MeshlogError | OSError))
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_S[1])


def _user_token_key(record: Record) -> bool:
    event = current_of(record).event
    return (isinstance(event, SigningKeyCreated | SigningKeyRetired)
            and event.purpose == USER_TOKEN)


def _kid_of(path: Path) -> str | None:
    """The key that signed the token in `path` (None: no file, or no token in it)."""
    try:
        return str(read_header(path.read_text().strip()))
    except (OSError, InvalidToken):
        return None


async def ensure_admin_token(path: Path, tokens: TokenCommands) -> bool:
    """Make `path` hold a valid admin token; True when one was written."""
    problem = await _unusable(path, tokens)
    if problem is None:
        return False
    token, _ = await tokens.issue_user_token(name=ADMIN_GROUP, groups=[ADMIN_GROUP],
                                             valid_for_s=MAX_VALID_FOR_S, now_ms=now_ms())
    if problem:
        log.log(logging.INFO if problem.startswith(_OLDER_KEY) else logging.WARNING,
                "replacing the admin token in %s: %s", path, problem)
        write_private(path, token.encode() + b"\n", replace=True)
    elif not write_private(path, token.encode() + b"\n", replace=False):
        return False  # another process of this data dir wrote it just now
    log.info("admin token written to %s (mode 0600), signed with %s", path, read_header(token))
    return True


_OLDER_KEY: Final = "it is signed with the key"


async def _unusable(path: Path, tokens: TokenCommands) -> str | None:
    """Why the token in `path` will not do: "" when there is none; None when it is fine."""
    token = _read(path)  # at start, and at a user-token key's change: not worth a thread
    if token is None:
        return ""
    key = await tokens.signing_key(USER_TOKEN, None, now_ms())
    try:
        kid = read_header(token)
        if kid != key.kid:
            return f"{_OLDER_KEY} {kid}, not the newest user-token key {key.kid}"
        claims = verify(token, key.public_key, UserClaims, now_s=time.time())
    except InvalidToken as exc:
        return str(exc)
    if ADMIN_GROUP not in claims.groups:
        return f"it is not in group {ADMIN_GROUP}"
    if await tokens.is_revoked(None, claims.jti):
        return f"the token {claims.jti} was revoked"
    return None


def _read(path: Path) -> str | None:
    try:
        token = path.read_text().strip()
        if path.stat().st_mode & 0o077:
            log.warning("the admin token %s is readable by other users: chmod 600 it", path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the admin token {path}: {exc.strerror}") from None
    return token
