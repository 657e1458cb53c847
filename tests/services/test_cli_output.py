"""What `meshlog get` and `meshlog inspect` print, against one real `meshlog up`: lists as one
page in YAML and JSON, ages in every table, and a reader that goes away (`| head -1`)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from services.cli._age import age, human_duration
from services.cli.resources import dataplane_tags
from tests.harness import VENV_BIN, ControlPlane, meshlog_up

DEMO = Path(__file__).parents[2] / "examples" / "demo.yaml"
PLURALS = ["meshes", "dataplanes", "meshservices", "hostnamegenerators"]


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("output")) as plane:
        _meshlog(plane, "apply", "-f", str(DEMO))
        yield plane


def _meshlog(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), "--api", cp.where["api"], *args],
                          capture_output=True, text=True, timeout=60, check=True)


@pytest.mark.integration
@pytest.mark.parametrize("plural", PLURALS)
def test_a_list_is_the_same_page_in_yaml_and_json(cp: ControlPlane, plural: str) -> None:
    as_json = json.loads(_meshlog(cp, "get", plural, "-o", "json").stdout)
    as_yaml = yaml.safe_load(_meshlog(cp, "get", plural, "-o", "yaml").stdout)  # one document
    assert as_yaml == as_json
    assert list(as_json) == ["total", "items", "next"]
    assert as_json["total"] == len(as_json["items"]) > 0
    assert as_json["next"] is None  # every page read


@pytest.mark.integration
def test_a_listed_page_applies_again(cp: ControlPlane, tmp_path: Path) -> None:
    page = tmp_path / "dataplanes.yaml"
    page.write_text(_meshlog(cp, "get", "dataplanes", "-o", "yaml").stdout)
    applied = _meshlog(cp, "apply", "-f", str(page)).stdout
    assert [line.split()[:2] for line in applied.splitlines()] == [
        ["dataplane", "'backend-1'"], ["dataplane", "'backend-2'"], ["dataplane", "'web-1'"]]


@pytest.mark.integration
@pytest.mark.parametrize("plural", PLURALS)
def test_every_table_ends_with_the_age_of_its_resources(cp: ControlPlane, plural: str) -> None:
    header, *rows = _meshlog(cp, "get", plural).stdout.splitlines()
    assert header.split()[-1] == "AGE"
    assert rows
    ages = [row.split()[-1] for row in rows]
    if plural == "hostnamegenerators":  # the zone's defaults, never created
        assert ages == ["-", "-", "-"]
    else:  # applied when the module began: seconds or minutes ago
        assert all(re.fullmatch(r"\d+s|\dm(\d+s)?", a) for a in ages), ages


@pytest.mark.integration
@pytest.mark.parametrize("command", [["get", "dataplanes", "-o", "json"],
                                     ["get", "meshservices", "-o", "yaml"],
                                     ["get", "meshservices"],
                                     ["inspect", "dataplane", "web-1", "-o", "json"],
                                     ["inspect", "dataplane", "web-1", "--config"]])
def test_a_closed_pipe_ends_the_command_quietly(cp: ControlPlane, command: list[str]) -> None:
    """`meshlog ... | head -1`: the reader goes away; no traceback, a SIGPIPE exit status."""
    proc = subprocess.Popen([str(VENV_BIN / "meshlog"), "--api", cp.where["api"], *command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # gone before the first write: that write fails, deterministically
    err = proc.stderr.read().decode()
    proc.stderr.close()
    code = proc.wait(timeout=60)
    assert err == ""
    assert code == 141  # 128 + SIGPIPE, as a shell shows a process that SIGPIPE ended


@pytest.mark.parametrize(("seconds", "shown"), [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"),
    (201, "3m21s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"),
    (5 * 3600 + 12 * 60, "5h12m"), (8 * 3600 + 59 * 60, "8h"), (47 * 3600, "47h"),
    (2 * 86400, "2d"), (3 * 86400 + 4 * 3600, "3d4h"), (8 * 86400 + 5 * 3600, "8d"),
    (729 * 86400, "729d"), (2 * 365 * 86400 + 3 * 86400, "2y3d"), (9 * 365 * 86400, "9y")])
def test_ages_read_as_kubectl_shows_them(seconds: int, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_an_age_is_measured_from_the_creation_time() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    created = (now - timedelta(minutes=3, seconds=7)).isoformat().replace("+00:00", "Z")
    assert age(created, now) == "3m7s"
    assert age("2026-01-02T03:04:00.250000Z", now) == "4s"
    assert age(None, now) == age("1970-01-01T00:00:00Z", now) == "-"


@pytest.mark.integration
def test_the_dataplane_table_is_kumactls(cp: ControlPlane) -> None:
    """kumactl's `get dataplanes` columns (`MESH NAME TAGS ADDRESS AGE`), TAGS with the
    fold's `kuma.io/zone` tag: the zone shows there."""
    header, *rows = _meshlog(cp, "get", "dataplanes").stdout.splitlines()
    assert header.split() == ["MESH", "NAME", "TAGS", "ADDRESS", "AGE"]
    web = next(row for row in rows if row.split()[1] == "web-1")
    assert web.split()[:5] == ["default", "web-1", "kuma.io/service=web",
                               "kuma.io/zone=default", "127.0.0.4"]


def test_dataplane_tags_read_as_kumactl_shows_them() -> None:
    doc = {"networking": {"address": "10.0.0.1", "inbound": [
        {"port": 1, "tags": {"version": "v2", "kuma.io/service": "web", "kuma.io/zone": "west"}},
        {"port": 2, "tags": {"kuma.io/service": "admin", "version": "v1", "kuma.io/zone": "west"}},
        {"port": 3}]}}
    assert dataplane_tags(doc) == (
        "kuma.io/service=admin,web kuma.io/zone=west version=v1,v2")
    assert dataplane_tags({"networking": {"address": "10.0.0.1"}}) == ""
