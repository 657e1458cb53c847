"""`meshlog signing-key`: Kuma's token signing-key rotation through the API (admin only).

    meshlog signing-key list [dataplane-token|zone-token|user-token] [--mesh M] [-o FORMAT]
    meshlog signing-key rotate dataplane-token|zone-token|user-token [--mesh M]
    meshlog signing-key retire dataplane-token|zone-token|user-token --serial N [--mesh M]

Kuma's procedure, in meshlog's words: `rotate` makes the next serial, which signs every new
token from then on while tokens of the older serials keep working; regenerate the tokens
(`meshlog generate ...`) and give them to their proxies and users; then `retire` the old
serial, which refuses every token it signed (Kuma: delete the secret
`dataplane-token-signing-key-<mesh>-<serial>`). The newest serial cannot be retired.
`--mesh` is for dataplane-token keys only (default `default`; `list` without it shows every
mesh's). A rotation of the user-token key needs nothing more for the CLI: every running API
renews the admin token of its data dir with the new serial (`services.runtime.admin_token`).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

import yaml

from events.identity import DATAPLANE_TOKEN, USER_TOKEN, ZONE_TOKEN
from services.cli._age import age
from services.cli._tables import print_table
from services.cli.client import ApiClient
from services.errors import ConfigError

__all__ = ["add_signing_key_parsers", "cmd_signing_key"]

_PURPOSES = (DATAPLANE_TOKEN, ZONE_TOKEN, USER_TOKEN)


def add_signing_key_parsers(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """The `signing-key` command, on the CLI's subparsers."""
    keys = sub.add_parser("signing-key", parents=parents,
                          help="token signing keys (admin): list | rotate | retire")
    actions = keys.add_subparsers(dest="key_action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=parents,
                                 help="the keys in service; the newest of each signs")
    listing.add_argument("purpose", nargs="?", choices=_PURPOSES,
                         help="only the keys of these tokens (default: all)")
    listing.add_argument("-m", "--mesh", help="only this mesh's dataplane-token keys")
    listing.add_argument("-o", "--output", choices=["table", "yaml", "json"], default="table")
    rotate = actions.add_parser("rotate", parents=parents,
                                help="make the next serial: it signs every new token; tokens "
                                     "of older serials keep working until retired")
    rotate.add_argument("purpose", choices=_PURPOSES)
    rotate.add_argument("-m", "--mesh", help="the mesh of a dataplane-token key (default "
                                             "default)")
    retire = actions.add_parser("retire", parents=parents,
                                help="retire an older serial: every token it signed is "
                                     "refused, open xDS streams that use one end")
    retire.add_argument("purpose", choices=_PURPOSES)
    retire.add_argument("--serial", type=int, required=True,
                        help="the serial to retire (not the newest; meshlog signing-key list)")
    retire.add_argument("-m", "--mesh", help="the mesh of a dataplane-token key (default "
                                             "default)")


def cmd_signing_key(args: argparse.Namespace, client: ApiClient) -> int:
    if args.mesh is not None and args.purpose not in (None, DATAPLANE_TOKEN):
        raise ConfigError(f"--mesh: a {args.purpose} key belongs to no mesh")
    if args.key_action == "list":
        return _list(args, client)
    mesh = (args.mesh or "default") if args.purpose == DATAPLANE_TOKEN else None
    where = f" --mesh {mesh}" if mesh else ""
    path = f"/tokens/{args.purpose.removesuffix('-token')}/signing-keys"
    if args.key_action == "rotate":
        result = client.request("POST", path, json={"mesh": mesh} if mesh else {})
        made = ("created a moment ago by another request" if result["unchanged"]
                else "created")
        print(f"signing key {result['kid']} {made}: it signs every new {args.purpose} from "
              "now on; tokens of older serials keep working until retired")
        if result["serial"] > 1:
            print(f"# once their tokens are replaced: meshlog signing-key retire "
                  f"{args.purpose}{where} --serial {result['serial'] - 1}")
        return 0
    params = {"mesh": mesh} if mesh else None
    result = client.request("DELETE", f"{path}/{args.serial}", params=params)
    state = "was already retired" if result["unchanged"] else "retired"
    print(f"signing key {result['kid']} {state}: every token it signed is refused")
    return 0


def _list(args: argparse.Namespace, client: ApiClient) -> int:
    items: list[dict[str, Any]] = []
    for purpose in (args.purpose,) if args.purpose else _PURPOSES:
        if args.mesh and purpose != DATAPLANE_TOKEN:
            continue  # only dataplane-token keys belong to a mesh
        params = {"mesh": args.mesh} if args.mesh else None
        items.extend(client.request("GET", f"/tokens/{purpose.removesuffix('-token')}"
                                           "/signing-keys", params=params)["items"])
    if args.output == "json":
        print(json.dumps(items, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(items, sort_keys=False), end="")
    else:
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for column in ("KID", "PURPOSE", "MESH", "SERIAL", "SIGNS", "AGE"):
            table.add_column(column)
        now = datetime.now(UTC)
        for item in items:
            table.add_row(item["kid"], item["purpose"], item["mesh"] or "-",
                          str(item["serial"]), "yes" if item["signs"] else "no",
                          age(item["createdAt"], now))
        print_table(table)
    return 0
