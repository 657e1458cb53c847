"""A mesh's CA created on global, folded in a zone's log (Kuma syncs the CA secret from
global to zones): the zone's proxies get certificates of the mesh's one CA, so cross-zone
mTLS holds. A zone whose projector runs with another secret key than global's (which sealed
the CA) reports it and leaves that mesh's proxies without certificates; it does not halt
its fold, and its other meshes go on."""

from __future__ import annotations

import logging

import pytest
from cryptography import x509

from events import AnyEvent, Provenance
from events.identity import SecretKey
from projections import apply_event
from projections.derive import derive_stale
from projections.state import ProjectionState
from tests.projections._histories import SECRET_KEY, History, dataplane, inbound

GLOBAL = Provenance(zone="", origin="global")
EAST = Provenance(zone="east", origin="zone")


def _fold(state: ProjectionState, steps: list[tuple[AnyEvent, Provenance]]) -> ProjectionState:
    for seq, (event, provenance) in enumerate(steps, start=1):
        apply_event(state, seq, event, provenance)
    derive_stale(state)
    return state


def _steps() -> list[tuple[AnyEvent, Provenance]]:
    on_global = History().mtls("default", "ca-1", enabled="ca-1", expiration="24h").mesh("plain")
    in_east = History(start=1_700_000_100_000)
    in_east.register(dataplane("default", "web-1", "10.0.0.1", inbound(8080, "web")))
    in_east.register(dataplane("plain", "web-2", "10.0.0.2", inbound(8080, "web")))
    return [*((e, GLOBAL) for e in on_global.events), *((e, EAST) for e in in_east.events)]


def test_a_zone_issues_certificates_of_the_ca_global_created() -> None:
    state = _fold(ProjectionState.load([], secret_key=SECRET_KEY, local_zone="east"), _steps())

    trust = state.trust("default")
    identity = state.identity("default", "web-1")
    assert trust is not None and identity is not None
    ca = state.ca("default", "ca-1")
    assert ca is not None and ca.synced
    cert = x509.load_pem_x509_certificate(identity.cert.encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(trust.roots[0].encode()))


def test_global_own_ca_is_not_marked_synced() -> None:
    state = _fold(ProjectionState.load([], secret_key=SECRET_KEY, local_zone=""), _steps()[:3])
    ca = state.ca("default", "ca-1")
    assert ca is not None and not ca.synced


@pytest.mark.parametrize("key", [SecretKey.generate(), None], ids=["another key", "no key"])
def test_a_zone_that_cannot_open_it_reports_it_and_goes_on(
        key: SecretKey | None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="meshlog.projector"):
        state = _fold(ProjectionState.load([], secret_key=key, local_zone="east"), _steps())

    assert state.trust("default") is not None  # its inbounds still require mTLS: fails closed
    assert state.identity("default", "web-1") is None
    assert state.dataplane("plain", "web-2") is not None  # the fold went on
    [reason] = state.ca_errors.values()
    assert "'default'" in reason and "--secret-key-file" in reason
    assert [r.getMessage() for r in caplog.records] == [reason]  # once
