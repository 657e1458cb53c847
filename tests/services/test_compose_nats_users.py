"""compose.yaml gives each process its NATS user (README, NATS permissions): the one-shot
`nats-users` runs `meshlog nats-users` (flags the CLI has) before anything else, every
nats-server includes the auth.conf it writes, and each meshlog service mounts its role's seed,
and no other, named by `MESHLOG_NATS_CREDS`. (No container engine here: the file is checked,
not run; tests/integration/test_nats_users.py runs the same command line and server
configuration on real nats-servers.)"""

from __future__ import annotations

import argparse
import posixpath
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from events.bus.permissions import ROLES
from services.cli.parser import build_parser
from services.runtime.nats_users import AUTH_CONF

ROOT = Path(__file__).parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ONE_SHOT = "nats-users"


def one_shot_steps(one_shot: str = ONE_SHOT) -> list[list[str]]:
    """A one-shot's shell script (`sh -c`), as the argv of each `&&` step."""
    command = SERVICES[one_shot]["command"]
    assert command[:2] == ["sh", "-c"], command
    return [shlex.split(step) for step in command[2].split("&&")]


def one_shot_args(one_shot: str) -> argparse.Namespace:
    """A one-shot's first step, a `meshlog` command, parsed by the CLI's own parser."""
    step = one_shot_steps(one_shot)[0]
    assert step[0] == "meshlog", step
    return build_parser().parse_args(step[1:])


def nats_users_args() -> argparse.Namespace:
    """The one-shot's `meshlog nats-users`."""
    return one_shot_args(ONE_SHOT)


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """A service's named volumes: volume -> (where it is mounted, read-only)."""
    found = {}
    for spec in service.get("volumes", []):
        source, target, *options = spec.split(":")
        if source in COMPOSE["volumes"]:
            found[source] = (target, options == ["ro"])
    return found


def volume_at(service: dict[str, Any], directory: str) -> str:
    """The named volume a service mounts at `directory`."""
    matches = [volume for volume, (target, _) in mounts(service).items()
               if posixpath.normpath(target) == posixpath.normpath(directory)]
    assert len(matches) == 1, (directory, service.get("volumes"))
    return matches[0]


def meshlog_services() -> dict[str, argparse.Namespace]:
    """Every service that runs a meshlog process of a role, its command parsed by the CLI."""
    found = {}
    for name, service in SERVICES.items():
        command = service.get("command")
        if isinstance(command, list) and command[:1] == ["meshlog"] and name != ONE_SHOT:
            args = build_parser().parse_args(command[1:])
            if args.command in ROLES:
                found[name] = args
    return found


def nats_servers() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in SERVICES.items()
            if str(service.get("image", "")).startswith("nats:")}


def test_the_one_shot_runs_meshlog_nats_users_with_flags_the_cli_has() -> None:
    args = nats_users_args()
    assert args.command == "nats-users"
    assert args.zone == "default" and args.mode is None and not args.force
    assert "restart" not in SERVICES[ONE_SHOT]  # one shot: runs, exits 0, stays down
    assert not mounts(SERVICES[ONE_SHOT])[volume_at(SERVICES[ONE_SHOT], args.out)][1]


def test_the_cluster_is_what_the_roles_are_written_for() -> None:
    """The users' permissions name the zone the processes run in, and the processes are the
    ones the README's role table names."""
    assert {args.command for args in meshlog_services().values()} == {"api", "projector",
                                                                      "gateway"}
    assert all(args.zone == nats_users_args().zone for args in meshlog_services().values())


@pytest.mark.parametrize("name", sorted(meshlog_services()))
def test_each_meshlog_service_gets_its_roles_seed_and_no_other(name: str) -> None:
    service, role = SERVICES[name], meshlog_services()[name].command
    creds = service["environment"]["MESHLOG_NATS_CREDS"]
    assert posixpath.basename(creds) == f"{role}.nk"
    volume = volume_at(service, posixpath.dirname(creds))
    assert mounts(service)[volume][1], "mounted read-only"
    # the one-shot copies that role's seed, and only it, into that volume
    copied = [step[:-1] for step in one_shot_steps()[1:]
              if volume_at(SERVICES[ONE_SHOT], step[-1]) == volume]
    assert copied == [["cp", posixpath.join(nats_users_args().out, f"{role}.nk")]]
    # no other seed reaches the service: not the one-shot's volume, not another role's
    one_shot_volumes = set(mounts(SERVICES[ONE_SHOT]))
    assert set(mounts(service)) & one_shot_volumes == {volume}
    assert service["depends_on"][ONE_SHOT] == {"condition": "service_completed_successfully"}


@pytest.mark.parametrize("name", sorted(nats_servers()))
def test_each_nats_server_includes_the_generated_auth_conf(name: str) -> None:
    service = nats_servers()[name]
    command = service["command"]
    assert command[0] == "-c", command
    config_file = command[1]
    (config,) = [c for c in service["configs"] if c["target"] == config_file]
    content = COMPOSE["configs"][config["source"]]["content"]
    includes = [line.split(None, 1)[1] for line in content.splitlines()
                if line.startswith("include ")]
    assert len(includes) == 1, content
    # nats-server joins an include path to the including file's directory (Go's
    # filepath.Join: an absolute one too)
    included = posixpath.normpath(posixpath.join(posixpath.dirname(config_file),
                                                 includes[0].lstrip("/")))
    volume = volume_at(service, posixpath.dirname(included))
    assert mounts(service)[volume][1], "mounted read-only"
    one_shot = SERVICES[ONE_SHOT]
    assert volume == volume_at(one_shot, nats_users_args().out)
    assert posixpath.basename(included) == AUTH_CONF
    assert service["depends_on"][ONE_SHOT] == {"condition": "service_completed_successfully"}


def test_the_three_nats_servers_are_checked() -> None:
    assert sorted(nats_servers()) == ["nats-1", "nats-2", "nats-3"]


def test_the_admin_and_sync_seeds_reach_no_service() -> None:
    """The one-shot copies only the seeds of the roles compose runs: admin's (everything)
    and sync's (it chooses which zones the streams source, events.bus.permissions) stay in
    its volume, which no meshlog service mounts. Compose's control plane is standalone: no projector
    runs the multi-zone sync, so none is given `--sync-creds`."""
    copied = {posixpath.basename(step[1]) for step in one_shot_steps()[1:]}
    assert copied == {f"{args.command}.nk" for args in meshlog_services().values()}
    for name, args in meshlog_services().items():
        assert args.mode in (None, "standalone"), name
        assert getattr(args, "sync_creds", None) is None, name
        assert "MESHLOG_SYNC_CREDS" not in SERVICES[name]["environment"], name
