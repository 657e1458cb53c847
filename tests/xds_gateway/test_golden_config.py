"""Golden files of the full computed config of one proxy (Kuma's testdata style).

Each `testdata/<case>.input.yaml` holds the resources (folded in order by the real fold), the
proxy (`mesh`, `name`) and optionally its `node` (`userAgentName`, `dnsPort`); the proxy's
`config_json` must equal `testdata/<case>.golden.json`. After a deliberate change of the
generated config, regenerate with `MESHLOG_REGENERATE_GOLDEN=1` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.xds_gateway._ads import Projection, event_for
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.resources.node import DEFAULT_DNS_PORT, ProxyNode
from xds_gateway.view import ProjectionView

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(p.name.removesuffix(".input.yaml") for p in TESTDATA.glob("*.input.yaml"))
REGENERATE = os.environ.get("MESHLOG_REGENERATE_GOLDEN") == "1"


def compute(case: str) -> dict[str, Any]:
    spec = yaml.safe_load((TESTDATA / f"{case}.input.yaml").read_text())
    view = ProjectionView()
    view.apply(Projection().fold(
        event_for(doc, at=i + 1) for i, doc in enumerate(spec["resources"])))
    node = spec.get("node", {})
    return config_json(view, spec["proxy"]["mesh"], spec["proxy"]["name"], ResourceCache(),
                       node=ProxyNode(user_agent_name=node.get("userAgentName", "envoy"),
                                      dns_port=node.get("dnsPort", DEFAULT_DNS_PORT)))


def render(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("case", CASES)
def test_config_matches_golden_file(case: str) -> None:
    golden = TESTDATA / f"{case}.golden.json"
    actual = render(compute(case))
    if REGENERATE:
        golden.write_text(actual)
    assert golden.exists(), f"{golden.name} is missing: run with MESHLOG_REGENERATE_GOLDEN=1"
    assert actual == golden.read_text(), (
        f"{case}: config differs from {golden.name}; if deliberate, regenerate with "
        "MESHLOG_REGENERATE_GOLDEN=1 and review the diff")


def test_every_golden_file_has_an_input() -> None:
    goldens = sorted(p.name.removesuffix(".golden.json") for p in TESTDATA.glob("*.golden.json"))
    assert goldens == CASES
