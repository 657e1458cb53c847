"""`--mode`, `--zone`, `--global` parsed once (services.runtime.config.parse_deployment)."""

from __future__ import annotations

import pytest

from events import GLOBAL_ZONE
from services.errors import ConfigError
from services.runtime.config import parse_deployment

URL = "nats-leaf://zone:pw@127.0.0.1:7422"


def test_standalone_is_the_default_and_keeps_the_zone() -> None:
    assert parse_deployment(None, "default", None) == ("standalone", "default")


def test_global_writes_the_global_zones_subjects() -> None:
    assert parse_deployment("global", "default", None) == ("global", GLOBAL_ZONE)


def test_a_global_url_makes_a_zone() -> None:
    assert parse_deployment(None, "east", URL) == ("zone", "east")


@pytest.mark.parametrize(("mode", "zone", "url", "message"), [
    ("zone", "east", None, "needs --global"),
    ("global", "default", URL, "joins no other"),
    ("standalone", "east", URL, "only a zone"),
    (None, "global", URL, "other than 'global'"),
    (None, "East_1", URL, "RFC 1123 label"),
])
def test_bad_combinations_name_the_flag(mode: str | None, zone: str, url: str | None,
                                        message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_deployment(mode, zone, url)


def test_separate_processes_need_no_url() -> None:
    assert parse_deployment("zone", "east", None, embedded=False) == ("zone", "east")
