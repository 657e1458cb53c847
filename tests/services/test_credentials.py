"""What an API process opens at start (services.runtime.credentials), on a real nats-server:
the secret key, the user-token key, and the admin token file, kept while it is good and
replaced when this control plane no longer accepts it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from events import JetStreamEventLog, now_ms
from events.identity import USER_TOKEN, SealedSecretError, SecretKey, UserClaims, unverified_claims
from services.errors import ConfigError
from services.runtime.admin_token import ensure_admin_token
from services.runtime.config import secret_key_of
from services.runtime.credentials import token_commands


async def test_the_admin_token_is_written_once_mode_0600(event_log: JetStreamEventLog,
                                                         tmp_path: Path) -> None:
    tokens = await token_commands(event_log, zone="default", secret_key=SecretKey.generate())
    path = tmp_path / "admin-token"
    assert await ensure_admin_token(path, tokens)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    claims = unverified_claims(token, UserClaims)
    assert (claims.name, claims.groups) == ("mesh-system:admin", ["mesh-system:admin"])
    assert claims.exp - claims.iat == 87_600 * 3600  # 10 years, as Kuma's admin token
    assert not await ensure_admin_token(path, tokens)  # a restart keeps it
    assert path.read_text().strip() == token


@pytest.mark.parametrize("why", ["another log", "revoked", "garbage", "not admin"])
async def test_an_admin_token_this_control_plane_refuses_is_replaced(
        event_log: JetStreamEventLog, tmp_path: Path, why: str) -> None:
    tokens = await token_commands(event_log, zone="default", secret_key=SecretKey.generate())
    path = tmp_path / "admin-token"
    if why == "another log":  # the data dir outlived its log: a fresh key signs now
        other = await token_commands(event_log, zone="other", secret_key=SecretKey.generate())
        await ensure_admin_token(path, other)
    elif why == "revoked":
        await ensure_admin_token(path, tokens)
        claims = unverified_claims(path.read_text().strip(), UserClaims)
        await tokens.revoke(USER_TOKEN, None, claims.jti, expires_at_ms=0, at=now_ms())
    elif why == "garbage":
        path.write_text("garbage\n")
    else:
        token, _ = await tokens.issue_user_token(name="jane", groups=["ops"], valid_for_s=60,
                                                 now_ms=now_ms())
        path.write_text(token)
    before = path.read_text()
    assert await ensure_admin_token(path, tokens)
    assert path.read_text() != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not await ensure_admin_token(path, tokens)


async def test_a_secret_key_that_does_not_open_the_keys_is_a_config_error(
        event_log: JetStreamEventLog) -> None:
    await token_commands(event_log, zone="default", secret_key=SecretKey.generate())
    with pytest.raises(ConfigError, match=r"^--secret-key-file: the signingkey:user-token/_/1 "
                                          r"was sealed with secret key"):
        await token_commands(event_log, zone="default", secret_key=SecretKey.generate())


def test_the_data_dirs_secret_key_is_made_once_a_named_one_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SealedSecretError, match="cannot read the secret key file"):
        secret_key_of(tmp_path / "nope", tmp_path, create=True)
    assert secret_key_of(None, tmp_path, create=False) is None
    made = secret_key_of(None, tmp_path, create=True)
    assert made is not None
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    again = secret_key_of(tmp_path / "secret.key", tmp_path / "elsewhere", create=False)
    assert again is not None and again.key_id == made.key_id
