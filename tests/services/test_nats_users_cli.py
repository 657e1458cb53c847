"""`meshlog nats-users` (README, NATS permissions, A real cluster): one seed per role, kept
unless `--force`, and an auth.conf whose users are those `meshlog up` gives its embedded
server, in an account with JetStream. (Real servers: tests/integration/test_nats_users.py.)"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, cast

import pytest

from events import GLOBAL_ZONE
from events.bus.permissions import ROLES, permissions
from services.cli.main import main
from services.runtime.nats_users import ensure_seeds, write_server_config


def _conf(path: Path) -> dict[str, Any]:
    """A configuration meshlog writes: one comment line, then JSON."""
    first, rest = path.read_text().split("\n", 1)
    assert first.startswith("# written by ")
    return cast(dict[str, Any], json.loads(rest))


def _seeds(out: Path) -> dict[str, bytes]:
    return {role: (out / f"{role}.nk").read_bytes() for role in ROLES}


def _run(*argv: str) -> int:
    return main(["nats-users", *argv])


def test_the_users_are_those_meshlog_up_gives_its_server(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    out = tmp_path / "creds"
    assert _run("--zone", "east", "--out", str(out)) == 0
    account = _conf(out / "auth.conf")["accounts"]["MESHLOG"]
    assert account["jetstream"] == "enabled"
    # what `meshlog up` writes for the same seeds and zone (services.runtime.nats_users)
    seeds = {role: out / f"{role}.nk" for role in ROLES}
    embedded = _conf(write_server_config(tmp_path / "up", seeds, "east"))
    assert account["users"] == embedded["authorization"]["users"]
    assert [user["permissions"] for user in account["users"]] == [
        permissions(role, "east").as_config() for role in ROLES]
    printed = capsys.readouterr().out
    assert "include ./creds/auth.conf" in printed
    for role in ("api", "projector", "gateway"):
        assert f"meshlog {role} --nats-creds {out / f'{role}.nk'}" in printed
    assert all(seed.decode().strip() not in printed for seed in _seeds(out).values())


def test_seeds_are_private_and_kept_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "creds"
    assert _run("--out", str(out)) == 0
    first, conf = _seeds(out), (out / "auth.conf").read_text()
    assert len(set(first.values())) == len(ROLES)  # one user per role
    (out / "api.nk").chmod(0o644)
    assert _run("--out", str(out)) == 0
    assert _seeds(out) == first and (out / "auth.conf").read_text() == conf
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    assert {stat.S_IMODE((out / f"{role}.nk").stat().st_mode) for role in ROLES} == {0o600}
    assert _run("--out", str(out), "--force") == 0
    renewed = _seeds(out)
    assert all(renewed[role] != first[role] for role in ROLES)
    assert (out / "auth.conf").read_text() != conf


def test_seeds_of_meshlog_up_are_the_same_kind(tmp_path: Path) -> None:
    """A data dir's seeds (`meshlog up`) given as --out are kept: one code makes both."""
    made = {role: path.read_bytes() for role, path in ensure_seeds(tmp_path).items()}
    assert _run("--out", str(tmp_path / "nats-creds")) == 0
    assert _seeds(tmp_path / "nats-creds") == made


def test_global_mode_writes_the_global_zones_subjects(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert _run("--mode", "global", "--out", str(tmp_path), "--account", "MESH-1") == 0
    users = _conf(tmp_path / "auth.conf")["accounts"]["MESH-1"]["users"]
    assert users[0]["permissions"] == permissions("api", GLOBAL_ZONE).as_config()
    printed = capsys.readouterr().out
    assert '"account": "MESH-1"' in printed  # the leafnode listener binds the account
    assert (f"meshlog projector --mode global --nats-creds {tmp_path / 'projector.nk'} "
            f"--sync-creds {tmp_path / 'sync.nk'} --admin-creds {tmp_path / 'admin.nk'}"
            ) in printed
    # admin's seed runs the source keeper of a multi-zone projector, not maintenance only
    assert "(admin: maintenance, and the source keeper below)" in printed


def test_the_global_account_gives_the_servers_own_users(tmp_path: Path) -> None:
    """`--account '$G'`: users outside `accounts`, in the account where a NATS that ran
    meshlog without users keeps its log (as `meshlog up` does)."""
    assert _run("--out", str(tmp_path), "--account", "$G") == 0
    conf = _conf(tmp_path / "auth.conf")
    assert "accounts" not in conf and len(conf["authorization"]["users"]) == len(ROLES)


@pytest.mark.parametrize(("argv", "message"), [
    (("--zone", "Bad Zone"), "--zone: 'Bad Zone' cannot name a zone"),
    (("--mode", "zone", "--zone", "global"), "--zone: 'global' must be an RFC 1123 label"),
    (("--account", "$SYS"), "--account: '$SYS' must be"),
    (("--account", "my.account"), "--account: 'my.account' must be"),
])
def test_bad_flags_are_named_and_nothing_is_written(tmp_path: Path, argv: tuple[str, ...],
                                                    message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "creds"
    assert _run(*argv, "--out", str(out)) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not out.exists()


def test_out_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "file"
    taken.write_text("x")
    assert _run("--out", str(taken)) == 2
    assert capsys.readouterr().err.strip() == f"error: --out: {str(taken)!r} is not a directory"
