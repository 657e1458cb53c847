"""What an API process needs to sign and check tokens, made ready at its start (issue 11):

- the control plane's secret key (`--secret-key-file`, default `<data dir>/secret.key`; see
  `services.runtime.config`), which opens the signing keys the log records;
- the user-token signing key, created in the log at the first start of any API (once, also
  when replicas start together: `events.commands.TokenCommands`);
- the admin user token (`mesh-system:admin`, valid 10 years as Kuma's `admin-user-token`),
  written only to `<data dir>/admin-token`, mode 0600, where the CLI on this machine finds it.
  A file that holds a token this control plane no longer accepts (another log, revoked,
  expired) or one signed with another key than the newest user-token key is replaced, so a
  reset log does not lock its operator out; so is one left behind by a rotation of the
  user-token key through this API (`admin_token_renewal`), before its old key is retired.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from events import EventLog, now_ms
from events.commands import TokenCommands
from events.identity import (
    MAX_VALID_FOR_S,
    USER_TOKEN,
    InvalidToken,
    SealedSecretError,
    SecretKey,
    UserClaims,
    read_header,
    verify,
)
from events.identity.private_files import write_private
from services.api.auth import ADMIN_GROUP
from services.errors import ConfigError

__all__ = ["admin_token_renewal", "api_tokens", "ensure_admin_token", "token_commands"]

log = logging.getLogger("meshlog.credentials")


async def api_tokens(event_log: EventLog, *, zone: str, secret_key: SecretKey | None,
                     admin_token: Path) -> TokenCommands | None:
    """An API process's token commands, its user-token key open and its admin token in
    `admin_token`; None without a secret key (it then verifies tokens but signs none)."""
    if secret_key is None:
        log.warning("no secret key (--secret-key-file): this API signs no tokens and writes "
                    "no admin token")
        return None
    tokens = await token_commands(event_log, zone=zone, secret_key=secret_key)
    await ensure_admin_token(admin_token, tokens)
    return tokens


async def token_commands(event_log: EventLog, *, zone: str, secret_key: SecretKey
                         ) -> TokenCommands:
    """The API's token commands, with the user-token key created (or opened) now: a secret
    key that cannot open it is a ConfigError at start, not a 500 at the first token."""
    tokens = TokenCommands(event_log, zone=zone, secret_key=secret_key)
    try:
        await tokens.signing_key(USER_TOKEN, None, now_ms())
    except SealedSecretError as exc:
        raise ConfigError(f"--secret-key-file: {exc}") from None
    log.info("token signing keys open with secret key %s", secret_key.key_id)
    return tokens


def admin_token_renewal(path: Path, tokens: TokenCommands | None
                        ) -> Callable[[], Awaitable[bool]] | None:
    """What the API calls after a user-token key is rotated or retired
    (`services.api.auth.ApiAuth`): `ensure_admin_token` for `path`; None without tokens."""
    return None if tokens is None else functools.partial(ensure_admin_token, path, tokens)


async def ensure_admin_token(path: Path, tokens: TokenCommands) -> bool:
    """Make `path` hold a valid admin token; True when one was written."""
    problem = await _unusable(path, tokens)
    if problem is None:
        return False
    token, _ = await tokens.issue_user_token(name=ADMIN_GROUP, groups=[ADMIN_GROUP],
                                             valid_for_s=MAX_VALID_FOR_S, now_ms=now_ms())
    if problem:
        log.warning("replacing the admin token in %s: %s", path, problem)
        write_private(path, token.encode() + b"\n", replace=True)
    elif not write_private(path, token.encode() + b"\n", replace=False):
        return False  # another process of this data dir wrote it just now
    log.info("admin token written to %s (mode 0600)", path)
    return True


async def _unusable(path: Path, tokens: TokenCommands) -> str | None:
    """Why the token in `path` will not do: "" when there is none; None when it is fine."""
    token = _read(path)  # at start, and after a user-token key rotation: not worth a thread
    if token is None:
        return ""
    key = await tokens.signing_key(USER_TOKEN, None, now_ms())
    try:
        kid = read_header(token)
        if kid != key.kid:
            return f"it is signed with the key {kid}, not the newest user-token key {key.kid}"
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
