"""Signed tokens in Kuma's formats: dataplane tokens (a proxy on xDS), zone tokens (a zone
ingress on xDS) and user tokens (the HTTP API).

A token is a JWT signed ES256 (EC P-256; Kuma signs RS256 with RSA-2048, ~100x slower to
make a key), whose header `kid` names the key that signed it: `<purpose>/<mesh or _>/<serial>`,
a key recorded in the log (`SigningKeyCreated`) of the control plane that verifies it; a key
that other control planes verify too names whose it is: global's zone-token keys, which every
zone verifies its ingresses' tokens with, are `_global/zone-token/_/<serial>` (`key_id`). The
claims are Kuma's:

    dataplane token  {Name, Mesh, Tags: {key: [values]}, Type: "dataplane", Workload, jti, iat,
                      nbf, exp}
    zone token       {Zone, Scope: ["ingress"], jti, iat, nbf, exp}
    user token       {Name, Groups: [...], jti, iat, nbf, exp}

`jti` is a UUID (what a revocation names), `nbf` 5 s before `iat` (Kuma's allowance for a
verifier whose clock is a little behind), times in Unix seconds.

Verification (`read_header`, then `verify` with the key the kid names) accepts ES256 only, so
neither `alg: none` nor an HMAC keyed with the public key passes; then the claims' types, then
the time against the caller's `now`. Every refusal is an `InvalidToken` (`TokenExpired` for an
expired one) whose message says what is wrong and never repeats the token.

Functions of their inputs (keys, claims, times): the caller passes `now` and decides where
keys come from.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Final, Literal, TypeVar

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from events.errors import PermanentError
from events.event_types import TokenPurpose

__all__ = [
    "ALGORITHM",
    "DATAPLANE_TOKEN",
    "DEFAULT_VALID_FOR_S",
    "MAX_VALID_FOR_S",
    "NOT_BEFORE_SKEW_S",
    "REVOCATION_KEPT_AFTER_EXPIRY_MS",
    "TOKEN_REFUSALS",
    "USER_TOKEN",
    "ZONE_TOKEN",
    "ZONE_TOKEN_SCOPES",
    "Claims",
    "DataplaneClaims",
    "InvalidToken",
    "KeyId",
    "SigningKey",
    "TokenExpired",
    "TokenRefusal",
    "UserClaims",
    "ZoneClaims",
    "dataplane_claims",
    "dataplane_token_holders",
    "format_valid_for",
    "generate_key_pair",
    "is_token_id",
    "key_id",
    "load_private_key",
    "load_public_key",
    "parse_key_id",
    "parse_valid_for",
    "read_header",
    "unverified_claims",
    "user_claims",
    "verify",
    "zone_claims",
]

ALGORITHM: Final = "ES256"
DATAPLANE_TOKEN: Final[TokenPurpose] = "dataplane-token"
USER_TOKEN: Final[TokenPurpose] = "user-token"
ZONE_TOKEN: Final[TokenPurpose] = "zone-token"
ZONE_TOKEN_SCOPES: Final = ("ingress", "egress")
"""Kuma's zone token scopes (`pkg/tokens/builtin/zone`); meshlog has zone ingresses only, so
an `egress` token authenticates nothing yet."""
DEFAULT_VALID_FOR_S: Final = 24 * 3600
"""A token's validity when the request names none. Kuma's dataplane tokens default to no
expiry at all; here an open stream ends when its token expires, so a short default with a
visible end beats a credential that lives for ever."""
MAX_VALID_FOR_S: Final = 87_600 * 3600
"""10 years (`87600h`): the validity of Kuma's admin user token, the longest meshlog signs."""
NOT_BEFORE_SKEW_S: Final = 5
REVOCATION_KEPT_AFTER_EXPIRY_MS: Final = 3_600_000
"""How long after its token's `exp` the fold keeps a revocation (1 h). A revocation of an
expired token says nothing more, but `verify` compares `exp` with the verifier's own wall
clock, without leeway, while the fold drops the revocation by event time, i.e. the control
plane's clock. A gateway or API host whose clock runs behind would still take the token as
valid after the revocation went, so the revocation stays for clocks up to this far behind:
far beyond the skew JWT verifiers allow (Spring's and SAP's 60 s, .NET's and Kerberos'
5 min; meshlog's own `nbf` allowance is `NOT_BEFORE_SKEW_S`), and still short next to the
tokens' lifetime (`DEFAULT_VALID_FOR_S`). Part of the fold's rule: a replay drops each
revocation at the event that a projector with the same value dropped it at."""

_GLOBAL = "_"
_GLOBAL_ISSUER = "_global"
"""The issuer of a kid of global's zone-token keys (`events.subjects.GLOBAL_ZONE`)."""


TokenRefusal = Literal["malformed", "wrong_kind", "unknown_key", "bad_signature",
                       "not_yet_valid", "expired", "revoked"]
"""Why a token is refused, in a few words fixed here: what a refusal counter is labelled
with (`meshlog_api_auth_refusals_total`, `meshlog_xds_token_refusals_total`), never the
token's contents, subject or name, which would make a series per caller.

- `malformed`: not a JWT, not ES256, a kid that names no meshlog key, claims not of the
  kind expected, a jti that is not a UUID, a mesh in its claims that is not its key's;
- `wrong_kind`: a token of another purpose (a dataplane token sent to the API);
- `unknown_key`: its kid names no key in service (retired, gone with its mesh, of another
  control plane, or made a moment ago and not known here yet);
- `bad_signature`: the key its kid names did not sign it;
- `not_yet_valid`: before its `nbf` (a clock behind the issuer's);
- `expired`: at or past its `exp`;
- `revoked`: its jti was revoked."""

TOKEN_REFUSALS: Final[tuple[TokenRefusal, ...]] = (
    "malformed", "wrong_kind", "unknown_key", "bad_signature", "not_yet_valid", "expired",
    "revoked")


class InvalidToken(PermanentError):
    """A token that is refused; the message says why and never holds the token, `reason`
    says it in a word (`TokenRefusal`)."""

    def __init__(self, message: str, reason: TokenRefusal = "malformed") -> None:
        super().__init__(message)
        self.reason: TokenRefusal = reason


class TokenExpired(InvalidToken):
    """A token past its `exp`."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "expired")


# --- keys -------------------------------------------------------------------------------------


class KeyId(msgspec.Struct, frozen=True):
    """The signing key a token's `kid` names."""

    purpose: TokenPurpose
    mesh: str | None
    serial: int
    issuer: str | None = None
    """The control plane whose key it is, for a key other control planes verify too
    (`_global`: global's zone-token keys); None: a key of the control plane whose log holds
    it, verified there only (every kid made before issuers were named, so their tokens keep
    verifying)."""

    def __str__(self) -> str:
        own = f"{self.purpose}/{self.mesh or _GLOBAL}/{self.serial}"
        return own if self.issuer is None else f"{self.issuer}/{own}"

    @property
    def local_form(self) -> str:
        """`<purpose>/<mesh or _>/<serial>` without the issuer: what a key's private half is
        sealed under (`events.commands.signing_keys.sealing_purpose`), the same before and
        after issuers were named, so a key sealed before still opens."""
        return f"{self.purpose}/{self.mesh or _GLOBAL}/{self.serial}"


def key_id(purpose: TokenPurpose, mesh: str | None, serial: int, *, zone: str) -> KeyId:
    """The kid of key `serial` of (`purpose`, `mesh`) made by the control plane `zone` (the
    zone token of its subjects, `_global` for global). Global's zone-token keys name global,
    since every zone verifies the zone tokens global signs (Kuma's global
    `zone-token-signing-key-<n>`, synced to zones) and must tell them from its own zone-token
    keys, whose serials start at 1 too; every other key is its control plane's alone and keeps
    the kid it always had."""
    issuer = _GLOBAL_ISSUER if purpose == ZONE_TOKEN and zone == _GLOBAL_ISSUER else None
    return KeyId(purpose=purpose, mesh=mesh, serial=serial, issuer=issuer)


_KID = re.compile(r"(?:(_global)/)?(user-token|dataplane-token|zone-token)/([a-z0-9._-]{1,253})"
                  r"/([1-9][0-9]{0,8})")


def parse_key_id(kid: str) -> KeyId | None:
    """The `KeyId` of `kid` (`[_global/]<purpose>/<mesh or _>/<serial>`), or None. Only
    a zone-token key names an issuer (`key_id`)."""
    match = _KID.fullmatch(kid)
    if match is None or (match[1] is not None and (match[2] != ZONE_TOKEN
                                                   or match[3] != _GLOBAL)):
        return None
    purposes: dict[str, TokenPurpose] = {DATAPLANE_TOKEN: DATAPLANE_TOKEN,
                                         ZONE_TOKEN: ZONE_TOKEN}
    purpose = purposes.get(match[2], USER_TOKEN)
    mesh = None if match[3] == _GLOBAL else match[3]
    return KeyId(purpose=purpose, mesh=mesh, serial=int(match[4]), issuer=match[1])


def generate_key_pair() -> tuple[bytes, str]:
    """A new EC P-256 key: (private key as PKCS#8 PEM, public key as PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


def load_private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"a signing key is EC P-256, not {type(key).__name__}")
    return key


def load_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"a signing key is EC P-256, not {type(key).__name__}")
    return key


class SigningKey:
    """A private key ready to sign, with the `kid` its tokens carry."""

    __slots__ = ("_key", "kid", "public_key")

    def __init__(self, kid: KeyId, private_key: ec.EllipticCurvePrivateKey) -> None:
        self.kid = kid
        self._key = private_key
        self.public_key = private_key.public_key()

    def __repr__(self) -> str:  # never the key
        return f"SigningKey(kid={str(self.kid)!r})"

    def sign(self, claims: Claims) -> str:
        return jwt.encode(msgspec.to_builtins(claims), self._key, algorithm=ALGORITHM,
                          headers={"kid": str(self.kid)})


# --- claims -----------------------------------------------------------------------------------


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    jti: str
    iat: int
    nbf: int
    exp: int


class DataplaneClaims(Claims, frozen=True, kw_only=True):
    """Kuma's dataplane token claims (`pkg/tokens/builtin/issuer`)."""

    name: str = msgspec.field(name="Name", default="")
    """The Dataplane's name; empty: any Dataplane of `mesh` that `tags` and `workload` allow
    (Kuma's token for a group of Dataplanes, e.g. every replica of a service)."""
    mesh: str = msgspec.field(name="Mesh")
    tags: dict[str, list[str]] = msgspec.field(name="Tags", default_factory=dict)
    """Tags the proxy's Dataplane must carry (each value on some inbound); empty: any."""
    type: Literal["dataplane"] = msgspec.field(name="Type", default="dataplane")
    workload: str = msgspec.field(name="Workload", default="")
    """The value the Dataplane's `kuma.io/workload` label must have; empty: any (Kuma 2.13+;
    a token made before it has none)."""


class ZoneClaims(Claims, frozen=True, kw_only=True):
    """Kuma's zone token claims (`pkg/tokens/builtin/zone`): any proxy of `Zone` acting in one
    of `Scope` (`ingress`, `egress`); it names no proxy."""

    zone: str = msgspec.field(name="Zone")
    scope: list[str] = msgspec.field(name="Scope", default_factory=list)


class UserClaims(Claims, frozen=True, kw_only=True):
    """Kuma's user token claims (`pkg/plugins/authn/api-server/tokens`)."""

    name: str = msgspec.field(name="Name")
    groups: list[str] = msgspec.field(name="Groups", default_factory=list)


C = TypeVar("C", bound=Claims)


def dataplane_claims(*, mesh: str, name: str, tags: dict[str, list[str]], valid_for_s: int,
                     now_s: int, workload: str = "") -> DataplaneClaims:
    return DataplaneClaims(jti=str(uuid.uuid4()), mesh=mesh, name=name, workload=workload,
                           tags={k: sorted(set(v)) for k, v in sorted(tags.items())},
                           iat=now_s, nbf=now_s - NOT_BEFORE_SKEW_S, exp=now_s + valid_for_s)


def dataplane_token_holders(claims: DataplaneClaims) -> str:
    """Who may use a dataplane token, in words: `mesh.name`, or the Dataplanes of the mesh
    its tags and workload allow (`default.web-1`; `any Dataplane of mesh 'default' with tags
    kuma.io/service=web`; `every Dataplane of mesh 'default'`), for logs and the CLI."""
    if claims.name:
        return f"{claims.mesh}.{claims.name}"
    tags = ", ".join(f"{key}={','.join(values)}" for key, values in claims.tags.items())
    wants = ([f"tags {tags}"] if tags else []) + (
        [f"workload {claims.workload}"] if claims.workload else [])
    if not wants:
        return f"every Dataplane of mesh {claims.mesh!r}"
    return f"any Dataplane of mesh {claims.mesh!r} with {' and '.join(wants)}"


def zone_claims(*, zone: str, scope: list[str], valid_for_s: int, now_s: int) -> ZoneClaims:
    return ZoneClaims(jti=str(uuid.uuid4()), zone=zone, scope=sorted(set(scope)),
                      iat=now_s, nbf=now_s - NOT_BEFORE_SKEW_S, exp=now_s + valid_for_s)


def user_claims(*, name: str, groups: list[str], valid_for_s: int, now_s: int) -> UserClaims:
    return UserClaims(jti=str(uuid.uuid4()), name=name, groups=sorted(set(groups)),
                      iat=now_s, nbf=now_s - NOT_BEFORE_SKEW_S, exp=now_s + valid_for_s)


def is_token_id(jti: str) -> bool:
    """Whether `jti` is a token id as meshlog makes them (a UUID, in its canonical form)."""
    try:
        return str(uuid.UUID(jti)) == jti
    except ValueError:
        return False


# --- verification -----------------------------------------------------------------------------


def read_header(token: str) -> KeyId:
    """The key a token says it was signed with (not verified yet: look the key up, then
    `verify`). Raises `InvalidToken` for what is not a meshlog token."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise InvalidToken("the token is not a JWT (header.payload.signature, base64url)"
                           ) from None
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise InvalidToken(f"the token is signed with {alg!r}; meshlog accepts {ALGORITHM} only")
    kid = header.get("kid")
    parsed = parse_key_id(kid) if isinstance(kid, str) else None
    if parsed is None:
        raise InvalidToken(f"the token's kid {kid!r} names no meshlog signing key "
                           "([_global/]<purpose>/<mesh or _>/<serial>)")
    return parsed


def verify(token: str, public_key: ec.EllipticCurvePublicKey, claims_type: type[C], *,
           now_s: float) -> C:
    """The claims of `token` if it is signed by `public_key` (ES256), has claims of
    `claims_type` and is valid at `now_s`; else `InvalidToken` (`TokenExpired`)."""
    try:
        payload = jwt.decode(token, public_key, algorithms=[ALGORITHM], options={
            # times are checked below against the caller's clock; no audience or issuer
            "verify_exp": False, "verify_nbf": False, "verify_iat": False,
            "verify_aud": False, "verify_iss": False})
    except jwt.InvalidSignatureError:
        raise InvalidToken("the token's signature does not verify with the key its kid "
                           "names", "bad_signature") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"the token cannot be read: {exc}") from None
    claims = _convert(payload, claims_type)
    if now_s < claims.nbf:
        raise InvalidToken(f"the token {claims.jti} is not valid before {_time(claims.nbf)}",
                           "not_yet_valid")
    if now_s >= claims.exp:
        raise TokenExpired(f"the token {claims.jti} expired at {_time(claims.exp)}")
    return claims


def unverified_claims(token: str, claims_type: type[C]) -> C:
    """The claims of `token` without checking its signature or times: for a client reading a
    token it was given (which proxy it is for, its id to revoke), never to trust one."""
    read_header(token)
    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"the token cannot be read: {exc}") from None
    return _convert(payload, claims_type)


def _convert(payload: object, claims_type: type[C]) -> C:
    kind = {DataplaneClaims: "dataplane token", ZoneClaims: "zone token"}.get(
        claims_type, "user token")
    try:
        claims = msgspec.convert(payload, claims_type)
    except msgspec.ValidationError as exc:
        raise InvalidToken(f"the token's claims are not those of a {kind}: {exc}") from None
    if not is_token_id(claims.jti):
        raise InvalidToken(f"the token's jti {claims.jti!r} is not a UUID")
    return claims


def _time(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


# --- validity ---------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def parse_valid_for(value: str) -> int:
    """A validity in Go's duration format, as Kuma's `validFor` (`24h`, `1h30m`, `8760h`),
    as whole seconds in 1 s..10 years. Raises ValueError saying what is wrong."""
    text = value.strip()
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{value!r} is not a duration (e.g. 24h, 30m, 1h30m, 8760h)")
    seconds = round(sum(float(n) * _UNIT_S[u] for n, u in parts))
    if seconds < 1:
        raise ValueError(f"{value!r} is less than 1s")
    if seconds > MAX_VALID_FOR_S:
        raise ValueError(f"{value!r} is more than {MAX_VALID_FOR_S // 3600}h (10 years)")
    return seconds


def format_valid_for(seconds: int) -> str:
    """Seconds as a duration `parse_valid_for` reads (`24h`, `90s`)."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

