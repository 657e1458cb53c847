"""mTLS in the fold (projections.identity): trust, workload certificates, renewal windows
and CA changes, all from the log alone (invariant 4). Batch- and restart-invariance of
histories with mTLS is covered by test_fold's property tests (`History.mtls`)."""

from __future__ import annotations

import pytest
from cryptography import x509

from events import ClockTicked
from projections.errors import IdentityUnavailable
from projections.state import ProjectionState
from projections.views import IdentityRow, TrustRow
from tests.projections._histories import (
    ZONE,
    History,
    dataplane,
    fold,
    fold_all,
    inbound,
    persisted,
    restart,
    rows,
)

START = 1_700_000_000_000


def _trust(state: ProjectionState, mesh: str = "default") -> TrustRow | None:
    return state.trust(mesh)


def _identity(state: ProjectionState, name: str = "web-1") -> IdentityRow:
    row = state.identity("default", name)
    assert row is not None, f"no certificate for {name}"
    return row


def _history() -> History:
    h = History(start=START)
    h.mtls("default", "ca-1", enabled="ca-1", expiration="10s")
    h.register(dataplane("default", "web-1", "10.0.0.1", inbound(8080, "web",
                                                                  tags={"version": "v1"})))
    return h


def test_a_dataplane_of_an_mtls_mesh_gets_its_certificate() -> None:
    state = fold_all(_history().events)
    trust = _trust(state)
    assert trust is not None and trust.backend == "ca-1" and trust.mode == "STRICT"
    ident = _identity(state)
    # the inbound's `kuma.io/zone` tag, which the fold adds, is a SAN like any tag (Kuma's)
    assert ident.uris == ["kuma://kuma.io/service/web", f"kuma://kuma.io/zone/{ZONE}",
                          "kuma://version/v1", "spiffe://default/web"]
    cert = x509.load_pem_x509_certificate(ident.cert.encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(trust.roots[0].encode()))
    # the window counts from the Mesh event that set the issuer; valid for 10 s
    assert ident.not_after - ident.not_before == 10_000 + 10_000  # plus the 10 s skew


def test_certificates_are_reissued_each_window_from_the_log_clock() -> None:
    h = _history()
    first = _identity(fold_all(h.events))
    # the Mesh event is at START + 2 s (the window's start), each event 1 s after the last
    h.wait(5_000).tick()  # 7 s in: before 4/5 of 10 s, the same certificate
    assert _identity(fold_all(h.events)).cert == first.cert
    h.wait(1_000).tick()  # 9 s in: past 8 s, the next window
    second = _identity(fold_all(h.events))
    assert second.cert != first.cert and second.not_after == first.not_after + 8_000
    state = fold_all(h.events)
    trust = _trust(state)
    assert trust is not None and state.next_expiry() == trust.renew_at


def test_a_quiet_log_is_woken_at_the_renewal_time() -> None:
    state = fold_all(_history().events)
    trust = _trust(state)
    assert trust is not None and state.next_expiry() == trust.renew_at
    # the ticker appends ClockTicked(at=renew_at): exactly then, a new window
    before = _identity(state).cert
    fold([[ClockTicked(at=trust.renew_at)]], state=state, first_seq=len(_history().events) + 1)
    assert _identity(state).cert != before


def test_the_same_history_issues_the_same_bytes_after_a_restart() -> None:
    h = _history()
    h.wait(9_000).tick()
    events = h.events
    whole = fold_all(events)
    cut = fold([events[:2]])
    resumed = fold([events[2:]], state=restart(cut), first_seq=3)
    assert rows(resumed) == rows(whole)


def test_trust_holds_every_listed_ca_and_a_new_issuer_reissues() -> None:
    h = _history()
    state = fold_all(h.events)
    old = _identity(state)
    h.mtls("default", "ca-1", "ca-2", enabled="ca-1")
    state = fold_all(h.events)
    trust = _trust(state)
    assert trust is not None and len(trust.roots) == 2 and trust.backend == "ca-1"
    assert _identity(state).cert == old.cert  # trusting one more CA re-issues nothing
    h.mtls("default", "ca-1", "ca-2", enabled="ca-2")
    state = fold_all(h.events)
    trust = _trust(state)
    assert trust is not None and trust.backend == "ca-2" and len(trust.roots) == 2
    new = x509.load_pem_x509_certificate(_identity(state).cert.encode())
    new.verify_directly_issued_by(x509.load_pem_x509_certificate(trust.roots[0].encode()))
    h.mtls("default", "ca-2", enabled="ca-2")  # the old CA is dropped last
    trust = _trust(fold_all(h.events))
    assert trust is not None and len(trust.roots) == 1


def test_mtls_off_or_a_dataplane_gone_removes_the_certificate() -> None:
    h = _history()
    h.register(dataplane("default", "web-2", "10.0.0.2", inbound(8080, "web")))
    h.deregister("default", "web-2")
    state = fold_all(h.events)
    assert state.identity("default", "web-2") is None
    assert persisted(state, "identity", "default/web-2") is None
    h.mtls("default", "ca-1", enabled=None)
    state = fold_all(h.events)
    assert _trust(state) is None and state.identity("default", "web-1") is None


def test_a_projector_without_the_secret_key_stops_at_the_ca_by_name() -> None:
    state = ProjectionState(ZONE)  # no secret key
    with pytest.raises(IdentityUnavailable, match="--secret-key-file"):
        fold([_history().events[:1]], state=state)


def test_the_realistic_history_issues_and_rotates() -> None:
    from tests.projections._histories import realistic_history

    state = fold_all(realistic_history())
    trust = state.trust("edge")
    assert trust is not None and trust.backend == "ca-2" and len(trust.roots) == 2
    issued = [k for c, k, _ in state.persisted() if c == "identity"]
    assert issued and all(k.startswith("edge/") for k in issued)
