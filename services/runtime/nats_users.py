"""NATS users of meshlog's roles: one nkey seed per role, and the nats-server configuration
that names their public keys with their role's permissions (`events.bus.permissions`).

`meshlog up` keeps them in its data dir for its embedded nats-server:

    <data-dir>/nats-creds/                    0700
        api.nk projector.nk gateway.nk sync.nk admin.nk   0600: one nkey seed each
    <data-dir>/nats/auth.conf                 the users (public keys) and their permissions

`meshlog nats-users --out DIR` makes the same seeds in DIR and `DIR/auth.conf`, the users in
an account of their own, for an operator's servers to include (services.cli.nats_users).

The seeds are made once and kept, so a process given one of them (`--nats-creds`) keeps
working across restarts; the configuration is written again each time (permissions depend on
the zone). A seed is never logged, and never leaves its file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]  # nkeys 0.2 ships no type information

from events.bus.permissions import ROLES, Role, server_users
from events.identity.private_files import write_private
from services.errors import ConfigError

__all__ = ["AUTH_CONF", "CREDS_DIR", "GLOBAL_ACCOUNT", "LEAF_USER", "admin_credentials",
           "check_account", "ensure_leaf_password", "ensure_seeds", "leafnode_listener",
           "leafnode_remote", "make_seeds", "role_credentials", "seed_file",
           "write_auth_config", "write_server_config"]

CREDS_DIR = "nats-creds"
AUTH_CONF = "auth.conf"
_SEED_SUFFIX = ".nk"
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def seed_file(folder: Path, role: Role) -> Path:
    """The seed of `role`'s user in a folder of seeds (`make_seeds`)."""
    return folder / f"{role}{_SEED_SUFFIX}"


def role_credentials(data_dir: Path, role: Role) -> Path:
    """Where the `meshlog up` of `data_dir` keeps the seed of `role`'s user (a process of that
    role joining it is given this file, `--nats-creds`)."""
    return seed_file(data_dir / CREDS_DIR, role)


def admin_credentials(data_dir: Path) -> Path | None:
    """The admin seed of the `meshlog up` of `data_dir`, if it made one (maintenance commands
    that talk to its NATS directly use it)."""
    path = role_credentials(data_dir, "admin")
    return path if path.exists() else None


def ensure_seeds(data_dir: Path) -> dict[Role, Path]:
    """The seeds of the `meshlog up` of `data_dir`, made at its first start (`make_seeds`)."""
    return {role: path for role, (path, _) in make_seeds(data_dir / CREDS_DIR).items()}


def make_seeds(folder: Path, *, replace: bool = False) -> dict[Role, tuple[Path, bool]]:
    """One seed file per role in `folder` (directory 0700, files 0600), each with whether this
    call made it: a missing one is made; an existing one is kept, its mode tightened if
    looser, unless `replace` (a new user: processes given the old seed are then refused)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    seeds = {}
    for role in ROLES:
        path = seed_file(folder, role)
        made = False
        if replace or not path.exists():
            seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER) + b"\n"
            # without `replace`, of two racing makers one wins and the other keeps its seed
            made = write_private(path, seed, replace=replace)
        if not made:
            path.chmod(0o600)
        seeds[role] = (path, made)
    return seeds


LEAF_USER = "zone"
"""The user zones' nats-servers connect to global's leafnode listener as."""


def ensure_leaf_password(data_dir: Path) -> str:
    """The password of global's leafnode listener (`<data-dir>/nats-creds/leaf.password`,
    0600), made at the first start: zones join with it in the URL global prints."""
    path = data_dir / CREDS_DIR / "leaf.password"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(path, secrets.token_urlsafe(24).encode() + b"\n", replace=True)
    return path.read_text().strip()


def leafnode_listener(host: str, port: int, password: str, account: str | None) -> dict[str, Any]:
    """Global's nats-server `leafnodes` block: zones' servers connect as `LEAF_USER` with
    `password`, into `account` (None: the server's global account, where `meshlog up` keeps
    its users). `no_advertise`: a zone dials only the URL it was given, so a proxy on the link
    stays in the path (reference/multizone.md §4)."""
    user: dict[str, Any] = {"user": LEAF_USER, "password": password}
    if account is not None:
        user["account"] = account
    return {"host": host, "port": port, "no_advertise": True, "authorization": user}


def leafnode_remote(global_url: str, account: str | None) -> dict[str, Any]:
    """A zone's nats-server `leafnodes` block: it dials global at `global_url` (global's
    `global_url`) from `account` (None: the server's global account)."""
    remote: dict[str, Any] = {"url": global_url}
    if account is not None:
        remote["account"] = account
    return {"remotes": [remote]}


def _public_key(path: Path) -> str:
    try:
        seed = bytearray(path.read_bytes().strip())
        return str(nkeys.from_seed(seed).public_key.decode())
    except Exception as exc:  # nkeys raises its own errors, and binascii's, for a bad seed
        raise ConfigError(f"{path} is not an nkey user seed ({type(exc).__name__}); remove "
                          f"it to have a new one made (processes given the old one must then "
                          f"be given the new one)") from None


GLOBAL_ACCOUNT = "$G"
"""nats-server's global account: users configured outside `accounts` (top-level
`authorization`) are in it, and so is the JetStream data of a server without users."""


def check_account(name: str) -> str:
    """`name` if it can name the nats-server account of meshlog's users, else a ConfigError."""
    if name != GLOBAL_ACCOUNT and _ACCOUNT_NAME.fullmatch(name) is None:
        raise ConfigError(f"--account: {name!r} must be 1 to 64 letters, digits, '_' or '-', "
                          f"or {GLOBAL_ACCOUNT} (other names starting with '$' are "
                          f"nats-server's own)")
    return name


def write_server_config(data_dir: Path, seeds: dict[Role, Path], zone: str,
                        extra: dict[str, Any] | None = None) -> Path:
    """Write the embedded nats-server's configuration for `seeds` (role -> seed file) in
    `zone`'s control plane; return its path.

    The users are the server's own (top-level `authorization`), not an `accounts` block: their
    JetStream data then stays in the global account, where a data dir made before meshlog had
    users keeps its log (an account of its own would start with an empty one)."""
    return write_auth_config(data_dir / "nats" / AUTH_CONF, seeds, zone, extra=extra,
                             written_by="`meshlog up` at every start")


def write_auth_config(path: Path, seeds: dict[Role, Path], zone: str, *,
                      account: str | None = None, extra: dict[str, Any] | None = None,
                      written_by: str) -> Path:
    """Write to `path` a nats-server configuration (JSON, which nats-server reads, whole or
    `include`d) with one user per role of `seeds`, its public key and its permissions in
    `zone`'s control plane: the server's own users (`account` None or `GLOBAL_ACCOUNT`), or
    the users of `account`, JetStream enabled. Replaced whole, never half-written; return
    `path`."""
    keys = {role: _public_key(seed) for role, seed in seeds.items()}
    users = server_users(keys, zone)
    auth: dict[str, Any] = (
        {"authorization": {"users": users}} if account in (None, GLOBAL_ACCOUNT) else
        {"accounts": {check_account(account): {"jetstream": "enabled", "users": users}}})
    conf = {**auth, **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (f"# written by {written_by}: one user per role (events/bus/permissions.py)\n"
            + json.dumps(conf, indent=2) + "\n")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
