"""Who a NATS connection is (its credentials file), and what NATS refused it.

Credentials are one file, told apart by content: a NATS `.creds` file (a user JWT and its
nkey seed, between `-----BEGIN NATS USER JWT-----` and `-----BEGIN USER NKEY SEED-----`
armour) for servers in operator/JWT mode, or a bare nkey user seed (`SU...`, what
`meshlog up` makes for its embedded server). nats-py reads the file again at every
(re)connection, so a rotated file takes effect at the next one.

nats-server answers a publish or subscription its user may not make with an asynchronous
`-ERR 'Permissions Violation for Publish to "<subject>"'` on the connection and drops the
message; the client's request then times out (reference/security.md §5, tested). `Refusals`
turns that into one clear line: every violation is logged with the connection's name (its role)
and the subject, and an operation that `guard`s its subject fails at once with
`NatsPermissionDenied` instead of waiting for its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypedDict

from events.errors import PermanentError

__all__ = [
    "CredentialOptions",
    "NatsPermissionDenied",
    "Refusals",
    "credential_options",
    "refusals_of",
    "register",
]

log = logging.getLogger("meshlog.nats")

_JWT_ARMOUR = "-----BEGIN NATS USER JWT-----"
_USER_SEED_PREFIX = "SU"
_MAX_CREDENTIALS_BYTES = 64 * 1024
# nats-py lowercases the server's error line before it reaches error_cb, the subject too
_AUTHORIZATION_VIOLATION = "authorization violation"
_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"')


class NatsPermissionDenied(PermanentError):
    """NATS refused an operation, or the connection itself, to these credentials: the role's
    permissions (or the credentials) do not allow it. Retrying will not help; the server's
    configuration or the credentials given to the process must change."""

    def __init__(self, message: str, *, subject: str = "") -> None:
        self.subject = subject
        super().__init__(message)


class CredentialOptions(TypedDict, total=False):
    """`nats.connect`'s options for one credentials file."""

    user_credentials: str
    nkeys_seed: str


def credential_options(path: Path | None) -> CredentialOptions:
    """The `nats.connect` options for the credentials file at `path` (none for None): a
    `.creds` file is `user_credentials`, an nkey seed file `nkeys_seed`. Raise
    `NatsPermissionDenied` naming the file if it is missing, unreadable or neither."""
    if path is None:
        return {}
    try:
        with path.open("rb") as file:
            head = file.read(_MAX_CREDENTIALS_BYTES).decode("ascii", "replace")
    except OSError as exc:
        raise NatsPermissionDenied(f"NATS credentials {path}: cannot read it "
                                   f"({exc.strerror})") from None
    if _JWT_ARMOUR in head:
        return {"user_credentials": str(path)}
    if head.strip().startswith(_USER_SEED_PREFIX):
        return {"nkeys_seed": str(path)}
    raise NatsPermissionDenied(f"NATS credentials {path}: neither a .creds file (user JWT and "
                               f"seed) nor an nkey user seed (a line starting with "
                               f"{_USER_SEED_PREFIX})")


class Refusals:
    """The permission violations NATS reported on one connection; `on_error` is (part of)
    its error callback."""

    def __init__(self, name: str, url: str, *, credentials: Path | None = None,
                 quiet: bool = False) -> None:
        self._name = name
        self._url = url
        self._credentials = credentials
        self._quiet = quiet
        """A command's: its refusal is raised, not logged."""
        self._guards: dict[str, list[_Guard]] = {}
        self.authorization_refused = False
        """The server refused the credentials themselves (or that there were none)."""

    def denied(self, action: str, subject: str) -> NatsPermissionDenied:
        given = ("its credentials do not allow it" if self._credentials is not None
                 else "it has no credentials (--nats-creds)")
        return NatsPermissionDenied(
            f"NATS permissions: {self._name} may not {action} {subject} ({given}; see the "
            f"README, NATS permissions)", subject=subject)

    def connection_refused(self) -> NatsPermissionDenied:
        given = (str(self._credentials) if self._credentials is not None
                 else "none given: pass --nats-creds")
        return NatsPermissionDenied(f"NATS at {self._url} refused {self._name}'s credentials "
                                    f"({given})")

    @staticmethod
    def refuses_connection(exc: BaseException) -> bool:
        """`exc` is the server's refusal of the credentials: nats-py raises it as a bare Error
        at the first connection, as an AuthorizationError at a reconnection."""
        return _AUTHORIZATION_VIOLATION in str(exc).lower()

    async def on_error(self, exc: Exception) -> bool:
        """Take note of `exc` if NATS refused something, and log it unless quiet; True if it
        did (a permission, or the connection's credentials)."""
        text = str(exc)
        if self.refuses_connection(exc):
            self.authorization_refused = True
            if not self._quiet:
                log.error("%s; trying again", self.connection_refused())
            return True
        match = _VIOLATION.search(text)
        if match is None:
            return False
        action = "publish to" if match[1] == "publish" else "subscribe to"
        guards = self._guards.get(match[2], [])
        # the subject as the guard wrote it: nats-py lowercased the server's copy
        subject = guards[0].subjects[match[2]] if guards else match[2]
        denied = self.denied(action, subject)
        if not self._quiet:
            log.error("%s", denied)
        for guard in guards:
            guard.refuse(denied)
        return True

    @contextlib.asynccontextmanager
    async def guard(self, *subjects: str) -> AsyncIterator[None]:
        """Fail the body with `NatsPermissionDenied` as soon as NATS refuses a publish to one
        of `subjects` on this connection, instead of at the request's timeout."""
        guard = _Guard({s.lower(): s for s in subjects})
        for key in guard.subjects:
            self._guards.setdefault(key, []).append(guard)
        try:
            async with asyncio.timeout(None) as timeout:
                guard.timeout = timeout
                yield
        except TimeoutError:
            if guard.refused is not None:
                raise guard.refused from None
            raise
        finally:
            for key in guard.subjects:
                waiting = self._guards[key]
                waiting.remove(guard)
                if not waiting:
                    del self._guards[key]


class _Guard:
    def __init__(self, subjects: dict[str, str]) -> None:
        self.subjects = subjects
        """Lowercased subject -> as given."""
        self.timeout: asyncio.Timeout | None = None
        self.refused: NatsPermissionDenied | None = None

    def refuse(self, denied: NatsPermissionDenied) -> None:
        if self.refused is None and self.timeout is not None:
            self.refused = denied
            # expire now: asyncio.timeout cancels the body and raises TimeoutError out of it,
            # leaving any other cancellation of the task as it was
            self.timeout.reschedule(asyncio.get_running_loop().time())


_REFUSALS: weakref.WeakKeyDictionary[Any, Refusals] = weakref.WeakKeyDictionary()


def register(nc: Any, refusals: Refusals) -> None:
    """Tie `refusals` to the connection `nc` (for `refusals_of`)."""
    _REFUSALS[nc] = refusals


def refusals_of(nc: Any) -> Refusals:
    """The refusals of a connection made by `connect_nats` (a fresh, unnamed record for any
    other, so a guard on it is harmless)."""
    found = _REFUSALS.get(nc)
    return found if found is not None else Refusals("this connection", "NATS")
