"""`meshlog dataplane bootstrap`: an Envoy bootstrap for a sidecar or a zone ingress, from
flags, a Dataplane file and a token file, each checked as the gateway will check it (the
bootstrap documents themselves: `services.cli.bootstrap`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from services.cli.resources import read_documents
from services.cli.tokens import read_token_file
from services.runtime.config import parse_port

__all__ = ["cmd_bootstrap", "token_file_holder"]


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from services.cli.bootstrap import (
        read_ca_cert_file,
        sidecar_bootstrap,
        zone_ingress_bootstrap,
    )

    host, _, port = args.xds_address.rpartition(":")
    ca_cert = read_ca_cert_file(args.ca_cert_file) if args.ca_cert_file else None
    if not args.token_file:
        _warn_no_token(args)
    if args.zone_ingress:
        if args.mesh or args.name or args.dataplane_file:
            raise SystemExit("error: --zone-ingress takes none of --mesh, --name, "
                             "--dataplane-file (a zone ingress is no Dataplane)")
        doc = zone_ingress_bootstrap(name=args.zone_ingress, xds_host=host or "127.0.0.1",
                                     xds_port=parse_port("--xds-address", port),
                                     admin_port=parse_port("--admin-port", args.admin_port),
                                     delta=args.delta, token=_zone_token_file(
                                         args.token_file) if args.token_file else None,
                                     ca_cert=ca_cert)
        return _print_doc(doc, args.output)
    mesh, name, dataplane, token = args.mesh, args.name, None, None
    if args.dataplane_file:
        dataplane = _dataplane_file(args.dataplane_file)
        mesh, name = _same("--mesh", mesh, dataplane["mesh"]), _same("--name", name,
                                                                     dataplane["name"])
    if args.token_file:
        token, (mesh, name) = token_file_holder(args.token_file, mesh, name)
    if not name:
        raise SystemExit("error: --name is required (or --dataplane-file, or a --token-file "
                         "that names its Dataplane)")
    doc = sidecar_bootstrap(mesh=mesh or "default", name=name, xds_host=host or "127.0.0.1",
                            xds_port=parse_port("--xds-address", port),
                            admin_port=parse_port("--admin-port", args.admin_port),
                            delta=args.delta, dataplane=dataplane, token=token,
                            ca_cert=ca_cert)
    return _print_doc(doc, args.output)


def _warn_no_token(args: argparse.Namespace) -> None:
    """A bootstrap with no token is right only for a --no-auth gateway; every other one ends
    the proxy's stream, so say so now, on stderr (stdout is the bootstrap), rather than leave
    it to Envoy's log."""
    if args.zone_ingress:
        kind, make = "zone", ("meshlog --api GLOBAL_API generate zone-token --zone ZONE > "
                              f"{args.zone_ingress}.token")
    else:
        kind, make = "dataplane", "meshlog generate dataplane-token --mesh MESH --name NAME > F"
    print(f"warning: no --token-file: this bootstrap sends no {kind} token, so a gateway that "
          f"requires tokens (the default; all but --no-auth) ends its proxy's stream; make "
          f"one with `{make}`, then --token-file F", file=sys.stderr)


def _print_doc(doc: dict[str, Any], output: str) -> int:
    text = json.dumps(doc, indent=2) if output == "json" else yaml.safe_dump(
        doc, sort_keys=False)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _dataplane_file(path: str) -> dict[str, Any]:
    """The one Dataplane in `path`, validated as the gateway will (errors name the field)."""
    from events import decode_resource

    docs = read_documents(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise SystemExit(f"error: --dataplane-file {path}: expected one Dataplane document, "
                         f"found {len(docs)}")
    decode_resource(docs[0], "Dataplane")  # InvalidResource: every violation, with its path
    return docs[0]


def token_file_holder(path: str, mesh: str | None, name: str | None
                ) -> tuple[str, tuple[str, str | None]]:
    """The dataplane token in `path`, and the mesh and name it is for (which --mesh, --name
    and --dataplane-file must not contradict: the gateway would refuse the proxy); a token
    naming no Dataplane (for a group of them) leaves the name to --name or
    --dataplane-file."""
    from events.identity import (
        DataplaneClaims,
        InvalidToken,
        dataplane_token_holders,
        unverified_claims,
    )
    from services.errors import ConfigError

    token = read_token_file("--token-file", path)
    try:
        claims = unverified_claims(token, DataplaneClaims)
    except InvalidToken as exc:
        raise ConfigError(f"--token-file {path}: not a dataplane token: {exc}") from None
    for flag, given, in_token in (("--mesh", mesh, claims.mesh), ("--name", name, claims.name)):
        if given and in_token and given != in_token:
            raise ConfigError(f"--token-file {path}: the token is for "
                              f"{dataplane_token_holders(claims)}, not {flag} {given!r}")
    return token, (claims.mesh, claims.name or name)


def _zone_token_file(path: str) -> str:
    """The zone token in `path`, checked to be one with scope ingress (the gateway would
    refuse anything else for a zone ingress)."""
    from events.identity import InvalidToken, ZoneClaims, unverified_claims
    from services.errors import ConfigError

    token = read_token_file("--token-file", path)
    try:
        claims = unverified_claims(token, ZoneClaims)
    except InvalidToken as exc:
        raise ConfigError(f"--token-file {path}: not a zone token (meshlog generate "
                          f"zone-token --zone ZONE): {exc}") from None
    if "ingress" not in claims.scope:
        raise ConfigError(f"--token-file {path}: the zone token's scope is {claims.scope}, "
                          "not ingress")
    return token


def _same(flag: str, given: str | None, in_file: str) -> str:
    if given and given != in_file:
        raise SystemExit(f"error: {flag} {given!r} differs from the --dataplane-file's "
                         f"{in_file!r}")
    return in_file
