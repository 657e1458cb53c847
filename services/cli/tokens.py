"""`meshlog generate` and `meshlog revoke`: tokens through the API (admin only), in kumactl's
words:

    meshlog generate dataplane-token --mesh M [--name N] [--tag K=V]... [--workload W]
                                     [--valid-for 24h]
    meshlog generate zone-token --zone Z [--scope ingress] [--valid-for 24h]
    meshlog generate user-token --name N [--group G]... [--valid-for 24h]
    meshlog revoke dataplane-token [--mesh M] (--jti ID [--expires-at T] | --token-file F)
    meshlog revoke zone-token (--jti ID [--expires-at T] | --token-file F)
    meshlog revoke user-token (--jti ID [--expires-at T] | --token-file F)

A zone token is asked of global's API (`meshlog --api GLOBAL_API generate zone-token --zone
Z`, as `kumactl generate zone-token` runs against global): global signs it for any zone
registered there and its key and revocations reach every zone. A zone's own API refuses (409
naming this command), as Kuma's zone control plane does; a standalone control plane (no
global) signs its own zone's.

A dataplane token without `--name` is Kuma's token for a group of Dataplanes: any Dataplane
of the mesh whose inbound tags the `--tag`s allow and whose `kuma.io/workload` label is the
`--workload` (one token for every replica of a service); with neither, for every Dataplane
of the mesh (the broadest token).

A token is printed alone on stdout (`> file` keeps it as is), what it is for and until when on
stderr. Revoking from `--token-file` reads the token's id, mesh and expiry from the token
itself (its signature is the control plane's business, not the CLI's).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

from events import rfc3339
from events.identity import (
    ZONE_TOKEN_SCOPES,
    Claims,
    DataplaneClaims,
    InvalidToken,
    UserClaims,
    ZoneClaims,
    dataplane_token_holders,
    unverified_claims,
)
from services.cli.client import ApiClient
from services.errors import ConfigError

__all__ = ["add_token_parsers", "cmd_generate", "cmd_revoke", "read_token_file"]

_VALID_FOR_HELP = ("how long the token is valid, a Go duration such as 24h, 720h, 1h30m "
                   "(at most 87600h; default 24h)")


def add_token_parsers(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """The `generate` and `revoke` commands, on the CLI's subparsers."""
    gen = sub.add_parser("generate", parents=parents,
                         help="generate a token (admin): dataplane-token | zone-token | "
                              "user-token")
    gen_sub = gen.add_subparsers(dest="token_kind", required=True, metavar="TOKEN")
    dp = gen_sub.add_parser("dataplane-token", parents=parents,
                            help="a token a proxy sends on xDS (meshlog dataplane bootstrap "
                                 "--token-file)")
    dp.add_argument("--mesh", default="default", help="the Dataplane's mesh (default "
                    "%(default)s)")
    dp.add_argument("--name", default="", help="the Dataplane's name; without it, the token "
                    "is for any Dataplane of the mesh that --tag and --workload allow (every "
                    "Dataplane of the mesh with neither)")
    dp.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                    help="a tag the Dataplane must carry (repeatable; values of one key add "
                         "up, e.g. --tag kuma.io/service=web, or comma-separated as kumactl: "
                         "--tag kuma.io/service=web,web-api)")
    dp.add_argument("--workload", default="", help="the value the Dataplane's "
                    "kuma.io/workload label must have")
    dp.add_argument("--valid-for", default="24h", help=_VALID_FOR_HELP)
    zone = gen_sub.add_parser("zone-token", parents=parents, description=(
        "Print a zone token (Kuma's) for the zone ingresses of --zone. Ask global's API "
        "(meshlog --api GLOBAL_API generate zone-token --zone west, as kumactl runs against "
        "global): it signs one for any zone registered there, and its key and revocations "
        "reach every zone. A zone's own API refuses (zone tokens are issued by global); a "
        "standalone control plane signs its own zone's."),
                              help="a token a zone ingress sends on xDS (meshlog dataplane "
                                   "bootstrap --zone-ingress NAME --token-file); ask global's "
                                   "API (--api GLOBAL_API: any registered zone, revocable "
                                   "there for every zone), or a standalone control plane's "
                                   "for its own zone")
    zone.add_argument("--zone", required=True,
                      help="the zone whose ingresses use it (on global: a zone registered "
                           "there, meshlog get zones)")
    zone.add_argument("--scope", action="append", choices=ZONE_TOKEN_SCOPES,
                      help="what the proxy may act as (repeatable; default ingress)")
    zone.add_argument("--valid-for", default="24h", help=_VALID_FOR_HELP)
    user = gen_sub.add_parser("user-token", parents=parents,
                              help="a token for the API (Authorization: Bearer)")
    user.add_argument("--name", required=True, help="the user's name")
    user.add_argument("--group", action="append", default=[],
                      help="a group of the user (repeatable); mesh-system:admin for admin")
    user.add_argument("--valid-for", default="24h", help=_VALID_FOR_HELP)

    rev = sub.add_parser("revoke", parents=parents,
                         help="revoke a token (admin): dataplane-token | zone-token | "
                              "user-token")
    rev_sub = rev.add_subparsers(dest="token_kind", required=True, metavar="TOKEN")
    for kind, text in (("dataplane-token", "refused from now on; its open xDS streams end"),
                       ("zone-token", "refused from now on; its ingresses' xDS streams end "
                                      "(revoke on the API that generated it: global's reach "
                                      "every zone)"),
                       ("user-token", "refused by the API from now on")):
        r = rev_sub.add_parser(kind, parents=parents, help=text)
        if kind == "dataplane-token":
            r.add_argument("--mesh", help="the token's mesh (default: the --token-file's, "
                           "else default)")
        which = r.add_mutually_exclusive_group(required=True)
        which.add_argument("--jti", help="the token's id (printed when it was generated)")
        which.add_argument("--token-file", help="a file holding the token")
        r.add_argument("--expires-at", metavar="TIME",
                       help="with --jti: when the token expires (RFC 3339, as printed when it "
                            "was generated), so that the revocation is forgotten an hour "
                            "after; without it, it is kept for ever")


def read_token_file(flag: str, path: str) -> str:
    """The token in `path` (surrounding whitespace dropped); errors name the flag."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"{flag} {path}: the file is empty")
    return token


def cmd_generate(args: argparse.Namespace, client: ApiClient) -> int:
    if args.token_kind == "dataplane-token":
        token = client.request_text("POST", "/tokens/dataplane", json={
            "mesh": args.mesh, "name": args.name, "tags": _tags(args.tag),
            "workload": args.workload, "validFor": args.valid_for})
        dp = unverified_claims(token, DataplaneClaims)
        what = f"dataplane token {dp.jti} for {dataplane_token_holders(dp)}"
        revoke = f"meshlog revoke dataplane-token --mesh {dp.mesh} --jti {dp.jti}"
        exp = dp.exp
    elif args.token_kind == "zone-token":
        token = client.request_text("POST", "/tokens/zone", json={
            "zone": args.zone, "scope": args.scope or ["ingress"],
            "validFor": args.valid_for})
        zt = unverified_claims(token, ZoneClaims)
        what = f"zone token {zt.jti} for zone {zt.zone} (scope {', '.join(zt.scope)})"
        revoke = f"meshlog revoke zone-token --jti {zt.jti}"  # on the same API
        exp = zt.exp
    else:
        token = client.request_text("POST", "/tokens/user", json={
            "name": args.name, "groups": args.group, "validFor": args.valid_for})
        user = unverified_claims(token, UserClaims)
        what = f"user token {user.jti} for {user.name!r}"
        revoke = f"meshlog revoke user-token --jti {user.jti}"
        exp = user.exp
    print(token)
    until = rfc3339(exp * 1000)
    print(f"# {what}, valid until {until}; revoke: {revoke} --expires-at {until}",
          file=sys.stderr)
    return 0


def cmd_revoke(args: argparse.Namespace, client: ApiClient) -> int:
    dataplane = args.token_kind == "dataplane-token"
    mesh = getattr(args, "mesh", None)
    body: dict[str, Any] = {"jti": args.jti}
    if args.expires_at is not None:
        if args.token_file:
            raise ConfigError("--expires-at goes with --jti: --token-file reads the expiry "
                              "from the token")
        body["expiresAt"] = _unix_s("--expires-at", args.expires_at)
    if args.token_file:
        token = read_token_file("--token-file", args.token_file)
        kinds: dict[str, type[Claims]] = {"dataplane-token": DataplaneClaims,
                                          "zone-token": ZoneClaims, "user-token": UserClaims}
        try:
            claims = unverified_claims(token, kinds[args.token_kind])
        except InvalidToken as exc:
            raise ConfigError(f"--token-file {args.token_file}: {exc}") from None
        if isinstance(claims, DataplaneClaims):
            if mesh and mesh != claims.mesh:
                raise ConfigError(f"--mesh {mesh!r} differs from the token's mesh "
                                  f"{claims.mesh!r}")
            mesh = claims.mesh
        body = {"jti": claims.jti, "expiresAt": claims.exp}
    if dataplane:
        body["mesh"] = mesh or "default"
    path = f"/tokens/{args.token_kind.removesuffix('-token')}/revocations"
    result = client.request("POST", path, json=body)
    where = f" of mesh {body['mesh']}" if dataplane else ""
    state = "was already revoked" if result["unchanged"] else "revoked"
    print(f"{args.token_kind} {body['jti']}{where} {state}")
    return 0


def _unix_s(flag: str, value: str) -> int:
    """An RFC 3339 time (`2026-12-01T10:00:00Z`, as `generate` prints it) in Unix seconds."""
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: not an RFC 3339 time (e.g. "
                          "2026-12-01T10:00:00Z)") from None
    if when.tzinfo is None:
        raise ConfigError(f"{flag} {value!r}: give the offset (Z for UTC)")
    return int(when.timestamp())


def _tags(pairs: list[str]) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key or not all(value.split(",")):
            raise ConfigError(f"--tag {pair!r} is not KEY=VALUE[,VALUE...]")
        tags.setdefault(key, []).extend(value.split(","))
    return tags
