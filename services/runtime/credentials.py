"""What an API process needs to sign and check tokens, made ready at its start (issue 11):

- the control plane's secret key (`--secret-key-file`, default `<data dir>/secret.key`; see
  `services.runtime.config`), which opens the signing keys the log records;
- the user-token signing key, created in the log at the first start of any API (once, also
  when replicas start together: `events.commands.TokenCommands`);
- the admin user token (`mesh-system:admin`, valid 10 years as Kuma's `admin-user-token`),
  written only to `<data dir>/admin-token`, mode 0600, where the CLI on this machine finds it;
  replaced at start when this control plane no longer accepts it, and kept up to date while
  the API runs (`services.runtime.admin_token`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from events import EventLog, now_ms
from events.commands import Deployment, TokenCommands
from events.identity import USER_TOKEN, SealedSecretError, SecretKey
from services.errors import ConfigError
from services.runtime.admin_token import ensure_admin_token

__all__ = ["api_tokens", "token_commands"]

log = logging.getLogger("meshlog.credentials")


async def api_tokens(event_log: EventLog, *, zone: str, secret_key: SecretKey | None,
                     admin_token: Path, deployment: Deployment = "standalone"
                     ) -> TokenCommands | None:
    """An API process's token commands, its user-token key open and its admin token in
    `admin_token`; None without a secret key (it then verifies tokens but signs none).
    `deployment`: a zone's sign no zone tokens (global's do)."""
    if secret_key is None:
        log.warning("no secret key (--secret-key-file): this API signs no tokens and writes "
                    "no admin token")
        return None
    tokens = await token_commands(event_log, zone=zone, secret_key=secret_key,
                                  deployment=deployment)
    await ensure_admin_token(admin_token, tokens)
    return tokens


async def token_commands(event_log: EventLog, *, zone: str, secret_key: SecretKey,
                         deployment: Deployment = "standalone") -> TokenCommands:
    """The API's token commands, with the user-token key created (or opened) now: a secret
    key that cannot open it is a ConfigError at start, not a 500 at the first token."""
    tokens = TokenCommands(event_log, zone=zone, secret_key=secret_key, deployment=deployment)
    try:
        await tokens.signing_key(USER_TOKEN, None, now_ms())
    except SealedSecretError as exc:
        raise ConfigError(f"--secret-key-file: {exc}") from None
    log.info("token signing keys open with secret key %s", secret_key.key_id)
    return tokens
