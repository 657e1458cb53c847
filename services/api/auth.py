"""Who calls the API, and what they may do (issue 11), in Kuma's model
(reference/security.md, section 4).

Authentication, once per request (`ApiAuth.authenticate`):

- `Authorization: Bearer <user token>`: a JWT `{Name, Groups, jti, iat, nbf, exp}` signed with
  a user-token key the log records and has not retired (looked up by its kid in the read
  models, whose row a retirement deletes; a key this process made or opened serves only until
  the read models have folded the event that created it), valid now, not revoked.
  The user is its `Name`, in its `Groups` plus `mesh-system:authenticated`. A header that is
  not such a token is a 401, also on a route anyone may read: a client that believes it is
  authenticated learns that it is not.
- no header, from loopback: a direct connection from 127.0.0.1 or ::1 is `mesh-system:admin`
  (Kuma's default, `authn/localhost.go`) unless `localhost_is_admin` is off. Direct: the
  socket's peer (the server trusts no proxy header) and no `Forwarded`/`X-Forwarded-For`/
  `X-Real-IP` header, which a reverse proxy on the same machine adds.
- otherwise `mesh-system:anonymous`, in `mesh-system:unauthenticated`.

Authorization (`guard`, app-wide): a route's `opt["access"]` says what it needs,
else its method does. Reads are open, as in Kuma OSS; writes need an authenticated user (so
a stranger on the network cannot change the mesh); a proxy's computed config, token generation
and revocation, signing keys, skipping a quarantined event, and the read-model swap need
`mesh-system:admin`. Refusals are
RFC 7807 documents: 401 with `WWW-Authenticate: Bearer` when the caller is not authenticated
(or its token is unusable), 403 when it is and may not. Each refusal carries its reason in a
word (`ApiRefusal`), which `meshlog_api_auth_refusals_total{reason}` counts
(services.api.metrics): the caller's name or token never labels a metric.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, Protocol, get_args

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from events import MeshlogError
from events.commands import TokenCommands
from events.identity import (
    USER_TOKEN,
    InvalidToken,
    TokenExpired,
    TokenRefusal,
    UserClaims,
    load_public_key,
    parse_key_id,
    read_header,
    verify,
)
from projections import ReadModelStore, SigningKeyRow, decode_typed, signing_key_row_key

__all__ = [
    "ADMIN",
    "ADMIN_GROUP",
    "ANONYMOUS",
    "API_REFUSALS",
    "AUTHENTICATED",
    "AUTHENTICATED_GROUP",
    "OPEN",
    "UNAUTHENTICATED_GROUP",
    "Access",
    "AdminToken",
    "ApiAuth",
    "ApiRefusal",
    "AuthContext",
    "Forbidden",
    "NotAuthenticated",
    "User",
    "guard",
    "require",
]

log = logging.getLogger("meshlog.api.auth")

ADMIN_GROUP: Final = "mesh-system:admin"
AUTHENTICATED_GROUP: Final = "mesh-system:authenticated"
UNAUTHENTICATED_GROUP: Final = "mesh-system:unauthenticated"
ANONYMOUS: Final = "mesh-system:anonymous"

Access = Literal["open", "authenticated", "admin"]
OPEN: Final[Access] = "open"
AUTHENTICATED: Final[Access] = "authenticated"
ADMIN: Final[Access] = "admin"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
_BEARER = "bearer "


_CallerRefusal = Literal["no_token", "not_admin"]
ApiRefusal = TokenRefusal | _CallerRefusal
"""Why the API refused a caller: its token's `TokenRefusal` (an `Authorization` header that
is not `Bearer <token>` is `malformed`), `no_token` (no credentials where a route needs
them), `not_admin` (authenticated, not in `mesh-system:admin`: the 403)."""

API_REFUSALS: Final[tuple[ApiRefusal, ...]] = (
    *get_args(TokenRefusal), *get_args(_CallerRefusal))


class NotAuthenticated(MeshlogError):
    """401: no usable credentials for what the request asks (or unusable ones)."""

    def __init__(self, message: str, reason: ApiRefusal) -> None:
        super().__init__(message)
        self.reason: ApiRefusal = reason


class Forbidden(MeshlogError):
    """403: the caller is authenticated and may not do this."""

    reason: Final[ApiRefusal] = "not_admin"


class User(msgspec.Struct, frozen=True):
    name: str
    groups: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups

    @property
    def is_authenticated(self) -> bool:
        return AUTHENTICATED_GROUP in self.groups

    def __str__(self) -> str:
        return f"user {self.name!r} (groups {', '.join(self.groups)})"


_ANONYMOUS_USER = User(ANONYMOUS, (UNAUTHENTICATED_GROUP,))
_LOCAL_ADMIN = User(ADMIN_GROUP, (ADMIN_GROUP, AUTHENTICATED_GROUP))


class AdminToken(Protocol):
    """The admin token of the API's data dir, which the process keeps signed with the newest
    user-token key (`services.runtime.admin_token`), else the CLI that finds it there would
    be refused once its key is retired."""

    async def renew(self) -> object:
        """Write a new admin token if the data dir's will not do (after a user-token key is
        rotated or retired through this API)."""
        ...

    async def refused(self, kid: str) -> None:
        """A token was refused because its key `kid` is not in service (retired)."""
        ...

    async def revoked(self, token: str) -> None:
        """`token` was refused because it was revoked."""
        ...


class ApiAuth:
    def __init__(self, *, localhost_is_admin: bool = True, tokens: TokenCommands | None = None,
                 clock: Callable[[], float] = time.time,
                 admin_token: AdminToken | None = None) -> None:
        """`tokens`: the command side's token keys (issuing; the keys it holds verify too);
        None in an API without a secret key, which verifies with the read models' keys.
        `admin_token`: the data dir's admin token, told when a token of a key not in service
        is refused (it may be the one in the file, then renewed before the 401 goes back)."""
        self.localhost_is_admin = localhost_is_admin
        self.tokens = tokens
        self.admin_token = admin_token
        self._clock = clock
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        """Public keys by their PEM, parsed once; which kids are in service is the store's."""

    async def authenticate(self, connection: ASGIConnection[Any, Any, Any, Any],
                           store: ReadModelStore) -> User:
        header = connection.headers.get("authorization")
        if header is not None:
            return await self._user_of(header, store)
        if self.localhost_is_admin and _direct_from_loopback(connection):
            return _LOCAL_ADMIN
        return _ANONYMOUS_USER

    async def _user_of(self, header: str, store: ReadModelStore) -> User:
        if header[:len(_BEARER)].lower() != _BEARER or not header[len(_BEARER):].strip():
            raise NotAuthenticated("the Authorization header is not `Bearer <user token>`",
                                   "malformed")
        token = header[len(_BEARER):].strip()
        try:
            kid = read_header(token)
            if kid.purpose != USER_TOKEN:
                raise InvalidToken(f"it is a {kid.purpose} (kid {kid}), not a user token",
                                   "wrong_kind")
            key = await self._key(str(kid), store)
            if key is None:
                if self.admin_token is not None:
                    await self.admin_token.refused(str(kid))
                raise InvalidToken(f"its signing key {kid} is not one of this control "
                                   "plane's (retired, or of another control plane)",
                                   "unknown_key")
            claims = verify(token, key, UserClaims, now_s=self._clock())
        except TokenExpired as exc:
            raise NotAuthenticated(f"expired user token: {exc}", exc.reason) from None
        except InvalidToken as exc:
            raise NotAuthenticated(f"invalid user token: {exc}", exc.reason) from None
        if await store.get("revocation", f"_/{claims.jti}") is not None:
            if self.admin_token is not None:
                await self.admin_token.revoked(token)
            raise NotAuthenticated(f"the user token {claims.jti} was revoked", "revoked")
        groups = tuple(sorted({*claims.groups, AUTHENTICATED_GROUP}))
        return User(claims.name, groups)

    async def _key(self, kid: str, store: ReadModelStore) -> ec.EllipticCurvePublicKey | None:
        """The public key of `kid` while it is in service: its row in the read models (which
        a retirement deletes), else the key this process made a moment ago, as long as the
        read models have not folded its creation (after that, no row means retired)."""
        parsed = parse_key_id(kid)
        if parsed is None:
            return None
        row_key = signing_key_row_key(parsed)
        body = await store.get("signingkey", row_key)
        own = self.tokens.opened_key(kid) if body is None and self.tokens is not None else None
        if own is not None:
            if await store.checkpoint() < own.seq:
                return own.key.public_key  # not folded yet
            # folded between the two reads, or since: the row says whether it is in service
            body = await store.get("signingkey", row_key)
        if body is None:
            return None
        pem = decode_typed(SigningKeyRow, body).public_key
        key = self._keys.get(pem)
        if key is None:
            key = self._keys[pem] = load_public_key(pem)
        return key


def _direct_from_loopback(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    client = connection.client
    if client is None or any(h in connection.headers for h in _PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(client.host)
    except ValueError:
        return False  # a unix socket or a test transport naming no address
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def require(user: User, access: Access, request: str = "this request") -> None:
    """Raise `NotAuthenticated` or `Forbidden` unless `user` may do what needs `access`;
    `request` words what was asked (`POST /tokens/user`)."""
    if access == OPEN or (access == AUTHENTICATED and user.is_authenticated) or user.is_admin:
        return
    if not user.is_authenticated:
        who = "an authenticated user" if access == AUTHENTICATED else f"group {ADMIN_GROUP}"
        raise NotAuthenticated(f"{request} needs {who}: send `Authorization: Bearer <user "
                               "token>` (meshlog generate user-token)", "no_token")
    raise Forbidden(f"{user} may not {request}: it needs group {ADMIN_GROUP}")


AuthContext = Callable[[Litestar], tuple[ApiAuth, ReadModelStore]]
"""Where a guard finds the app's `ApiAuth` and its current read models."""


def guard(context: AuthContext) -> Callable[[ASGIConnection[Any, Any, Any, Any],
                                             BaseRouteHandler], Awaitable[None]]:
    """The app-wide guard: authenticate the caller (kept as `connection.user`) and check the
    access the route needs (`opt["access"]`, else open for reads and authenticated for
    writes)."""

    async def authorize(connection: ASGIConnection[Any, Any, Any, Any],
                        handler: BaseRouteHandler) -> None:
        auth, store = context(connection.app)
        user = await auth.authenticate(connection, store)
        connection.scope["user"] = user
        method = connection.scope.get("method", "GET")
        access: Access = handler.opt.get("access") or (
            OPEN if method in _READS else AUTHENTICATED)
        require(user, access, f"{method} {connection.url.path}")

    return authorize
