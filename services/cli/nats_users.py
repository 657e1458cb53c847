"""`meshlog nats-users`: the NATS users of meshlog's roles for a NATS an operator runs (a
cluster, `compose.yaml`), as `meshlog up` makes them for its embedded server.

    meshlog nats-users --zone Z --out DIR [--account MESHLOG] [--mode M] [--force]

It makes (or keeps) one nkey user seed per role in DIR and writes `DIR/auth.conf`: the
account, JetStream enabled, with the five users, their public keys and their role's
permissions for the zone (services.runtime.nats_users, events.bus.permissions). Every server
of the NATS includes that file; every process is given its role's seed (`--nats-creds`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from events.bus.permissions import ROLES, Role, permissions
from events.bus.sources import GLOBAL_DOMAIN
from events.subjects import MalformedSubject
from services.errors import ConfigError
from services.runtime.config import env, parse_deployment
from services.runtime.nats_users import (
    AUTH_CONF,
    GLOBAL_ACCOUNT,
    LEAF_USER,
    check_account,
    leafnode_listener,
    leafnode_remote,
    make_seeds,
    write_auth_config,
)

__all__ = ["DEFAULT_ACCOUNT", "add_nats_users_parser", "cmd_nats_users"]

DEFAULT_ACCOUNT = "MESHLOG"

_PROCESS: dict[Role, str] = {
    "api": "meshlog api", "projector": "meshlog projector", "gateway": "meshlog gateway",
    "sync": "meshlog projector --sync-creds, multi-zone only",
    "admin": "meshlog replay, meshlog bench, operators' maintenance, meshlog projector "
             "--admin-creds (the source keeper, multi-zone only)"}


def add_nats_users_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """The `nats-users` command, on the CLI's subparsers."""
    users = sub.add_parser("nats-users", parents=parents, help="make the NATS users of "
                           "meshlog's roles (nkey seeds, and the auth.conf every nats-server "
                           "includes) for a NATS you run")
    users.add_argument("--out", required=True, metavar="DIR",
                       help="where the seeds (<role>.nk, 0600) and auth.conf go (made 0700)")
    users.add_argument("--zone", default=env("ZONE", "default"),
                       help="the zone whose subjects the roles may write (env MESHLOG_ZONE; "
                            "default %(default)s)")
    users.add_argument("--mode", default=env("MODE"), choices=["standalone", "global", "zone"],
                       help="standalone (default); global: the global control plane's "
                            "subjects (--zone ignored); zone: a zone of a multi-zone "
                            "deployment (env MESHLOG_MODE)")
    users.add_argument("--account", default=DEFAULT_ACCOUNT,
                       help="the nats-server account of the users, JetStream enabled "
                            "(default %(default)s; '$G': the servers' own users, in their "
                            "global account, where a NATS that ran meshlog without users "
                            "keeps its log)")
    users.add_argument("--force", action="store_true",
                       help="replace the seeds DIR holds with new ones (new users: processes "
                            "given the old seeds are refused once the servers reload)")


def cmd_nats_users(args: argparse.Namespace) -> int:
    mode, zone = parse_deployment(args.mode, args.zone, None, embedded=False)
    try:
        permissions("api", zone)
    except MalformedSubject as exc:
        raise ConfigError(f"--zone: {args.zone!r} cannot name a zone ({exc})") from None
    account = check_account(args.account)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {str(out)!r} is not a directory")
    seeds = make_seeds(out, replace=args.force)
    written_by = "`meshlog nats-users " + (
        "--mode global`" if mode == "global" else f"--zone {zone}`")
    conf = write_auth_config(out / AUTH_CONF, {r: path for r, (path, _) in seeds.items()},
                             zone, account=account, written_by=written_by)
    for role in ROLES:
        path, made = seeds[role]
        state = "replaced" if made and args.force else "made" if made else "kept"
        print(f"{path}: {role} user's nkey seed ({state}; {_PROCESS[role]})")
    where = ("the servers' own users (global account $G)" if account == GLOBAL_ACCOUNT else
             f"account {account} (JetStream enabled)")
    print(f"{conf}: {where}, users {', '.join(ROLES)} with their permissions in zone {zone}")
    print(_usage(out, conf, account, mode, zone))
    return 0


def _usage(out: Path, conf: Path, account: str, mode: str, zone: str) -> str:
    lines = [
        "Use:",
        "  in the configuration of every nats-server (each node of the cluster):",
        f"    include ./{out.name}/{conf.name}",
        f"  (for a configuration file in {out.parent.resolve()}: nats-server reads include "
        "paths relative to the including file, absolute ones too),",
        f"  or run it with -c {conf} and its other settings as flags;",
        "  for each meshlog process its role's seed, and no other (or MESHLOG_NATS_CREDS):",
    ]
    lines += [f"    meshlog {role} --nats-creds {out / f'{role}.nk'}"
              for role in ("api", "projector", "gateway")]
    admin = ("maintenance only" if mode == "standalone"
             else "maintenance, and the source keeper below")
    lines += [f"    meshlog replay --nats-creds {out / 'admin.nk'}   (admin: {admin})",
              f"Keep {out} as you keep keys: a seed is its user's password. Run this again "
              f"to keep the seeds; --force makes new ones."]
    if mode == "standalone":
        return "\n".join(lines)
    leaf_account = None if account == GLOBAL_ACCOUNT else account
    if mode == "global":
        leafnodes = leafnode_listener("0.0.0.0", 7422, "PASSWORD", leaf_account)
        link = "a leafnode listener that takes the zones' servers into the account"
        flags, domain = "--mode global", GLOBAL_DOMAIN
    else:
        leafnodes = leafnode_remote(f"nats-leaf://{LEAF_USER}:PASSWORD@GLOBAL_HOST:7422",
                                    leaf_account)
        link = "a leafnode link to global's servers from the account"
        flags, domain = f"--mode zone --zone {zone}", zone
    lines += [f"Multi-zone ({mode}): these servers also get `domain: {domain}` in their "
              f"jetstream block, and {link} (PASSWORD: one of yours, the same on global and "
              f"in each zone's URL):",
              f"    leafnodes: {json.dumps(leafnodes)}",
              "  There the projector also keeps the stream's sources (the multi-zone sync), "
              "as the sync user, which asks the source keeper to apply each change, as the "
              "admin user (sources only: the sync may not update a stream):",
              f"    meshlog projector {flags} --nats-creds {out / 'projector.nk'} "
              f"--sync-creds {out / 'sync.nk'} --admin-creds {out / 'admin.nk'}"]
    return "\n".join(lines)
