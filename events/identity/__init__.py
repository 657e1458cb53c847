"""Identity: sealed secrets, the meshes' certificate authorities, workload certificates and
signed tokens. Pure functions of their inputs (keys, names, times), so that what the log
records reproduces the same certificates on every replay and every replica."""

from events.identity.sealing import SECRET_KEY_ENV, SealedSecretError, SecretKey
from events.identity.tokens import (
    DATAPLANE_TOKEN,
    DEFAULT_VALID_FOR_S,
    MAX_VALID_FOR_S,
    USER_TOKEN,
    Claims,
    DataplaneClaims,
    InvalidToken,
    KeyId,
    SigningKey,
    TokenExpired,
    UserClaims,
    format_valid_for,
    is_token_id,
    load_public_key,
    parse_key_id,
    parse_valid_for,
    read_header,
    unverified_claims,
    verify,
)

__all__ = [
    "DATAPLANE_TOKEN",
    "DEFAULT_VALID_FOR_S",
    "MAX_VALID_FOR_S",
    "SECRET_KEY_ENV",
    "USER_TOKEN",
    "Claims",
    "DataplaneClaims",
    "InvalidToken",
    "KeyId",
    "SealedSecretError",
    "SecretKey",
    "SigningKey",
    "TokenExpired",
    "UserClaims",
    "format_valid_for",
    "is_token_id",
    "load_public_key",
    "parse_key_id",
    "parse_valid_for",
    "read_header",
    "unverified_claims",
    "verify",
]
