"""`inbound[].serviceProbe` (Kuma's field): defaults, and bad values named with path and value."""

from __future__ import annotations

from typing import Any

import pytest

from events import Dataplane, InvalidResource, decode_resource
from events.resources import ServiceProbe, TcpProbe


def _dataplane(probe: Any) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": "web-1",
            "networking": {"address": "10.0.0.1", "inbound": [
                {"port": 8080, "tags": {"kuma.io/service": "web"}, "serviceProbe": probe}]}}


def _violations(probe: Any) -> list[str]:
    with pytest.raises(InvalidResource) as info:
        decode_resource(_dataplane(probe))
    return [str(v) for v in info.value.violations]


def test_service_probe_takes_kumas_defaults() -> None:
    dp = decode_resource(_dataplane({"tcp": {}}))

    assert isinstance(dp, Dataplane)
    assert dp.networking.inbound[0].service_probe == ServiceProbe(
        interval="1s", timeout="2s", unhealthy_threshold=1, healthy_threshold=1,
        tcp=TcpProbe())


def test_service_probe_fields_are_kumas_names() -> None:
    dp = decode_resource(_dataplane({"interval": "0.5s", "timeout": "3s",
                                     "unhealthyThreshold": 2, "healthyThreshold": 4,
                                     "tcp": {}}))

    assert isinstance(dp, Dataplane)
    assert dp.networking.inbound[0].service_probe == ServiceProbe(
        interval="0.5s", timeout="3s", unhealthy_threshold=2, healthy_threshold=4,
        tcp=TcpProbe())


def test_inbound_without_service_probe_has_none() -> None:
    doc = _dataplane({})
    del doc["networking"]["inbound"][0]["serviceProbe"]

    dp = decode_resource(doc)

    assert isinstance(dp, Dataplane) and dp.networking.inbound[0].service_probe is None


def test_a_duration_that_is_not_protobuf_json_is_rejected_with_its_value() -> None:
    violations = _violations({"interval": "10", "tcp": {}})

    assert len(violations) == 1
    assert violations[0].startswith("networking.inbound[0].serviceProbe.interval: '10'")


def test_a_zero_timeout_is_rejected() -> None:
    assert _violations({"timeout": "0s", "tcp": {}}) == [
        "networking.inbound[0].serviceProbe.timeout: '0s' must be longer than 0s"]


def test_a_zero_threshold_is_rejected_with_its_value() -> None:
    violations = _violations({"unhealthyThreshold": 0, "tcp": {}})

    assert len(violations) == 1
    assert violations[0].startswith("networking.inbound[0].serviceProbe.unhealthyThreshold: 0")


def test_an_unknown_probe_field_is_rejected() -> None:
    assert _violations({"http": {"path": "/"}}) == [
        "networking.inbound[0].serviceProbe.http: unknown field"]
