"""The embedded nats-server's users: one nkey seed per role in the data dir, and the server
configuration that names their public keys with their role's permissions
(`events.bus.permissions`).

    <data-dir>/nats-creds/                    0700
        api.nk projector.nk gateway.nk admin.nk    0600: one nkey user seed each
    <data-dir>/nats/auth.conf                 the users (public keys) and their permissions

The seeds are made at the first start and kept, so a process given one of them
(`--nats-creds`) keeps working across restarts; the configuration is written again at every
start (permissions depend on the zone). A seed is never logged, and never leaves its file.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]  # nkeys 0.2 ships no type information

from events.bus.permissions import ROLES, Role, server_users
from events.identity.private_files import write_private
from services.errors import ConfigError

__all__ = ["CREDS_DIR", "LEAF_USER", "admin_credentials", "ensure_leaf_password", "ensure_seeds",
           "role_credentials", "write_server_config"]

CREDS_DIR = "nats-creds"
_SEED_SUFFIX = ".nk"


def role_credentials(data_dir: Path, role: Role) -> Path:
    """Where the `meshlog up` of `data_dir` keeps the seed of `role`'s user (a process of that
    role joining it is given this file, `--nats-creds`)."""
    return data_dir / CREDS_DIR / f"{role}{_SEED_SUFFIX}"


def admin_credentials(data_dir: Path) -> Path | None:
    """The admin seed of the `meshlog up` of `data_dir`, if it made one (maintenance commands
    that talk to its NATS directly use it)."""
    path = role_credentials(data_dir, "admin")
    return path if path.exists() else None


def ensure_seeds(data_dir: Path) -> dict[Role, Path]:
    """One seed file per role, made if missing (directory 0700, files 0600); existing ones are
    kept, their modes tightened if looser."""
    folder = data_dir / CREDS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    seeds = {}
    for role in ROLES:
        path = role_credentials(data_dir, role)
        if path.exists():
            path.chmod(0o600)
        else:
            write_private(path, nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
                          + b"\n", replace=True)
        seeds[role] = path
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


def _public_key(path: Path) -> str:
    try:
        seed = bytearray(path.read_bytes().strip())
        return str(nkeys.from_seed(seed).public_key.decode())
    except Exception as exc:  # nkeys raises its own errors, and binascii's, for a bad seed
        raise ConfigError(f"{path} is not an nkey user seed ({type(exc).__name__}); remove "
                          f"it to have a new one made (processes given the old one must then "
                          f"be given the new one)") from None


def write_server_config(data_dir: Path, seeds: dict[Role, Path], zone: str,
                        extra: dict[str, Any] | None = None) -> Path:
    """Write nats-server's configuration for `seeds` (role -> seed file) in `zone`'s control
    plane; return its path.

    The users are the server's own (top-level `authorization`), not an `accounts` block: their
    JetStream data then stays in the global account, where a data dir made before meshlog had
    users keeps its log (an account of its own would start with an empty one)."""
    keys = {role: _public_key(path) for role, path in seeds.items()}
    conf: dict[str, Any] = {"authorization": {"users": server_users(keys, zone)}, **(extra or {})}
    path = data_dir / "nats" / "auth.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("# written by `meshlog up` at every start: one user per role "
            "(events/bus/permissions.py)\n" + json.dumps(conf, indent=2) + "\n")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
