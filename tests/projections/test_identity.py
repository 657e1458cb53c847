"""mTLS in the fold (projections.identity): trust, workload certificates, renewal windows
and CA changes, all from the log alone (invariant 4). Batch- and restart-invariance of
histories with mTLS is covered by test_fold's property tests (`History.mtls`)."""

from __future__ import annotations

import itertools
import json

import pytest
from cryptography import x509

from events import AnyEvent, ClockTicked
from projections.errors import IdentityUnavailable
from projections.identity import RENEWAL_GROUPS, renewal_group
from projections.state import ProjectionState
from projections.views import IdentityRow, TrustRow, decode_typed, encode_row
from tests.projections._histories import (
    SECRET_KEY,
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


def _first_renewal_in(name: str) -> int:
    """Milliseconds after the window's start at which `name`'s first certificate of a 10 s
    mesh is renewed: 8 s (4/5), plus its renewal group's share of 1 s (an eighth of 8 s)."""
    return 8_000 + 8_000 * renewal_group("default", name) // (8 * RENEWAL_GROUPS)


def test_certificates_are_reissued_each_window_from_the_log_clock() -> None:
    h = _history()
    first = _identity(fold_all(h.events))
    # the Mesh event is at START + 2 s (the window's start), each event 1 s after the last
    window = START + 2_000
    h.tick_at(window + 7_000)  # before 4/5 of 10 s, the same certificate
    assert _identity(fold_all(h.events)).cert == first.cert
    renewal = window + _first_renewal_in("web-1")
    h.tick_at(renewal - 1)  # 1 ms before its group's renewal, still
    assert _identity(fold_all(h.events)).cert == first.cert
    h.tick_at(renewal)  # its group's renewal: the next window, from that moment
    second = _identity(fold_all(h.events))
    assert second.cert != first.cert and second.not_after == first.not_after + (renewal - window)
    h.tick_at(renewal + 8_000 - 1)  # then every 8 s (4/5 of 10 s)
    assert _identity(fold_all(h.events)).cert == second.cert
    h.tick_at(renewal + 8_000)
    third = _identity(fold_all(h.events))
    assert third.cert != second.cert and third.not_after == second.not_after + 8_000


def test_a_quiet_log_is_woken_at_each_renewal_time() -> None:
    """The ticker appends ClockTicked(at=next_expiry) while the log is quiet: web-1's group
    moves exactly at its time."""
    h = _history()
    state = fold_all(h.events)
    start = _identity(state).not_before + 10_000  # the skew
    before, seq, ticks = _identity(state).cert, len(h.events), []
    while _identity(state).cert == before:
        due = state.next_expiry()
        assert due is not None
        seq += 1
        fold([[ClockTicked(at=due)]], state=state, first_seq=seq)
        ticks.append(due)
    assert ticks[-1] == start + _first_renewal_in("web-1")
    assert ticks == sorted(set(ticks))  # each group's time once, in order


def _tick_until(state: ProjectionState, seq: int, until: int) -> tuple[int, list[int]]:
    """What the ticker does on a quiet log: `ClockTicked(at=next_expiry)` while that is
    before `until`. Returns the last sequence and the ticks' times."""
    ticks = []
    while (due := state.next_expiry()) is not None and due < until:
        seq += 1
        fold([[ClockTicked(at=due)]], state=state, first_seq=seq)
        ticks.append(due)
    return seq, ticks


def _in_other_groups(count: int, *names: str) -> list[str]:
    """`count` Dataplane names of mesh default, each in a renewal group none of `names` or
    the others is in."""
    taken = {renewal_group("default", n) for n in names}
    found = []
    for i in itertools.count():
        if renewal_group("default", f"api-{i}") not in taken:
            taken.add(renewal_group("default", f"api-{i}"))
            found.append(f"api-{i}")
            if len(found) == count:
                return found
    raise AssertionError("unreachable")


def test_a_quiet_log_is_woken_only_at_the_times_of_groups_that_hold_a_dataplane() -> None:
    """The ticker appends ClockTicked(at=next_expiry) while the log is quiet. A mesh of one
    or two Dataplanes gets one tick per renewal period for each of their groups, not one for
    each of the 16 groups; web-1's exactly at its group's time."""
    h = _history()
    state = fold_all(h.events)
    start = _identity(state).not_before + 10_000  # the skew
    seq, ticks = _tick_until(state, len(h.events), start + 8_000 + 9_000)
    web_1 = [start + _first_renewal_in("web-1"), start + _first_renewal_in("web-1") + 8_000]
    assert ticks == web_1  # two renewal periods of web-1's group, nothing else
    assert _identity(state).not_before == web_1[-1] - 10_000
    (other,) = _in_other_groups(1, "web-1")
    h.tick_at(start + 2 * 8_000 + 1_000)  # after every group's second time, none due
    h.register(dataplane("default", other, "10.0.0.9", inbound(8080, "api")))
    fold([h.events[-2:]], state=state, first_seq=seq + 1)
    _, ticks = _tick_until(state, seq + 2, start + 5 * 8_000)
    web_1 = [start + _first_renewal_in("web-1") + k * 8_000 for k in (2, 3)]
    api = [start + _first_renewal_in(other) + k * 8_000 for k in (2, 3)]
    assert ticks == sorted(web_1 + api)  # one tick per period for each of the two groups


def test_a_mesh_with_mtls_and_no_dataplane_is_never_ticked() -> None:
    h = History(start=START)
    h.mtls("default", "ca-1", enabled="ca-1", expiration="10s")
    state = fold_all(h.events)
    assert _trust(state) is not None and state.next_expiry() is None
    h.register(dataplane("default", "web-1", "10.0.0.1", inbound(8080, "web")))
    assert fold_all(h.events).renewals_due(START + 10_000_000) == ["default"]
    h.deregister("default", "web-1")  # its group holds none again
    state = fold_all(h.events)
    assert state.renewals_due(START + 10_000_000) == []  # (web's grace period still ends)


def test_a_dataplane_joining_an_empty_group_gets_a_valid_certificate_renewed_in_time() -> None:
    """web-1's group ticks alone, so the mesh's clock is at its last renewal; another group's
    time passed since. A Dataplane that joins that group just before web-1's next tick gets
    the window holding the join (the one at the clock ended a quarter period after that
    group's time: expired by then), and its own group's ticks from then on."""
    h = _history()
    state = fold_all(h.events)
    start = _identity(state).not_before + 10_000
    late = [n for n in _in_other_groups(15, "web-1")
            if renewal_group("default", n) > renewal_group("default", "web-1")]
    assert late, "web-1's group is the last one"
    name = late[-1]
    renewed = start + _first_renewal_in("web-1") + 8_000  # web-1's second renewal
    seq, _ = _tick_until(state, len(h.events), renewed + 1)
    join = renewed + 8_000 - 1  # a moment before web-1's next tick
    h.gap = 0
    h.tick_at(join)  # sets the register's `at`; no group is due at it
    h.register(dataplane("default", name, "10.0.0.9", inbound(8080, "api")))
    fold([h.events[-2:]], state=state, first_seq=seq + 1)
    cert = _identity(state, name)
    assert cert.not_before + 10_000 <= join < cert.not_after
    assert cert.not_before + 10_000 == start + _first_renewal_in(name) + 8_000
    seq, renewed_at = seq + 2, [cert.not_before]
    while (due := state.next_expiry()) is not None and due < join + 4 * 8_000:
        # every certificate still has a tenth of its life left when it is renewed
        assert _identity(state, name).not_after - due >= 1_000
        seq += 1
        fold([[ClockTicked(at=due)]], state=state, first_seq=seq)
        if _identity(state, name).not_before != renewed_at[-1]:
            renewed_at.append(_identity(state, name).not_before)
    assert [b - a for a, b in itertools.pairwise(renewed_at)] == [8_000] * 4


def test_a_meshs_renewals_are_spread_and_each_comes_before_its_certificate_expires() -> None:
    h = History(start=START, gap=0)  # all at the mesh's start
    h.mtls("default", "ca-1", enabled="ca-1", expiration="10s")
    names = [f"web-{i}" for i in range(40)]
    for i, name in enumerate(names):
        h.register(dataplane("default", name, f"10.0.0.{i + 1}", inbound(8080, "web")))
    state = fold_all(h.events)
    seq, renewed_at = len(h.events), {name: [_identity(state, name).not_before] for name in names}
    while (due := state.next_expiry()) is not None and due < START + 60_000:
        # every certificate is still valid a tenth of its life before this moment's renewals
        assert all(_identity(state, n).not_after - due >= 1_000 for n in names)
        seq += 1
        fold([[ClockTicked(at=due)]], state=state, first_seq=seq)
        for name in names:
            if _identity(state, name).not_before != renewed_at[name][-1]:
                renewed_at[name].append(_identity(state, name).not_before)
    groups = {renewal_group("default", n) for n in names}
    assert len(groups) > 8  # 40 names: most of the 16 groups
    # the first renewals are spread over a second (an eighth of 8 s), by group ...
    firsts = {n: at[1] - at[0] for n, at in renewed_at.items()}
    assert len(set(firsts.values())) == len(groups)
    assert all(8_000 <= d < 9_000 for d in firsts.values())
    # ... and then each Dataplane renews every 8 s (4/5 of 10 s), as Kuma does
    for at in renewed_at.values():
        assert [b - a for a, b in itertools.pairwise(at[1:])] == [8_000] * (len(at) - 2)
        assert len(at) >= 6


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


def test_a_trust_row_reads_across_the_release_before() -> None:
    """Fold version 6 stored one `windowStart` for the mesh; 7 stores its `clock` under that
    name: gateways and stores of either release read the other's rows."""
    trust = _trust(fold_all(_history().events))
    assert trust is not None
    stored = json.loads(encode_row(trust))
    assert stored["windowStart"] == trust.clock and "clock" not in stored
    assert decode_typed(TrustRow, json.dumps(stored).encode()) == trust


def test_a_store_of_fold_version_6_resumed_issues_no_expired_certificate() -> None:
    """Fold version 6 kept one window for the whole mesh: `windowStart` at its start and
    `renewAt` a period later. Resumed, the groups renew from that time on (the first event
    past it moves them), so a Dataplane registered half a period later gets a certificate
    valid now, whatever its group: none one period behind, expired."""
    h = History(start=START, gap=0)
    h.mtls("default", "ca-1", enabled="ca-1", expiration="10s")  # a period of 8 s
    state = fold_all(h.events)
    trust = _trust(state)
    assert trust is not None
    stored = []
    for collection, key, body in state.persisted():
        if collection == "trust":  # as version 6 wrote it, two windows in
            old = json.loads(body)
            old["windowStart"], old["renewAt"] = trust.anchor + 16_000, trust.anchor + 24_000
            body = json.dumps(old).encode()
        stored.append((collection, key, body))
    resumed = ProjectionState.load(stored, secret_key=SECRET_KEY, local_zone=ZONE)
    at = trust.anchor + 20_000
    h.tick_at(at)
    for i in range(40):
        h.register(dataplane("default", f"web-{i}", f"10.0.1.{i + 1}", inbound(8080, "web")))
    fold([h.events[-41:]], state=resumed, first_seq=len(h.events) - 40)
    for i in range(40):
        cert = _identity(resumed, f"web-{i}")
        assert cert.not_before <= at < cert.not_after, (i, cert.not_before, cert.not_after)




def _every_groups_times(anchor: int, until: int) -> list[int]:
    """When fold version 8's ticker ticked a 10 s mesh: every group's time, held or not."""
    return sorted(t for g in range(RENEWAL_GROUPS)
                  for t in range(anchor + 8_000 + 8_000 * g // 128, until, 8_000))


def _ticked_as_now(events: list[AnyEvent], until: int) -> tuple[ProjectionState, int]:
    """Fold `events` one at a time as the live projector does, with this release's ticks
    (`next_expiry` while it is before the next event, then before `until`)."""
    state = ProjectionState.load([], secret_key=SECRET_KEY, local_zone=ZONE)
    seq = 0
    for event in [*events, ClockTicked(at=until)]:
        seq, _ = _tick_until(state, seq, event.at)
        seq += 1
        fold([[event]], state=state, first_seq=seq)
    return state, seq


def _identities(state: ProjectionState) -> list[tuple[str, str, bytes]]:
    return [row for row in state.persisted() if row[0] == "identity"]


def test_a_log_of_the_release_before_folds_to_the_same_certificates() -> None:
    """Fold version 8 ticked every group's time; this release ticks only those of groups that
    hold a Dataplane. The logs either makes of the same history, and a store of version 8
    resumed, issue the same certificates: the ticks of empty groups change only the trust
    row (its `clock` and `renew_at`)."""
    h = _history()
    trust = _trust(fold_all(h.events))
    assert trust is not None
    anchor = trust.anchor
    joining, leaving = _in_other_groups(2, "web-1")
    h.wait(anchor + 12_000 - h.events[-1].at)
    h.register(dataplane("default", joining, "10.0.0.8", inbound(8080, "api")))
    h.register(dataplane("default", leaving, "10.0.0.9", inbound(8080, "api")))
    h.wait(9_000).deregister("default", leaving)
    h.wait(7_500).register(dataplane("default", leaving, "10.0.0.9", inbound(8080, "api")))
    until = anchor + 6 * 8_000
    ticks: list[AnyEvent] = [ClockTicked(at=t) for t in _every_groups_times(anchor, until)]
    old_log = sorted([*h.events, *ticks, ClockTicked(at=until)],
                     key=lambda e: (e.at, not isinstance(e, ClockTicked)))
    now, _ = _ticked_as_now(h.events, until)
    assert len(_identities(now)) == 3
    assert _identities(fold_all(old_log)) == _identities(now)
    # a store version 8 folded to the middle of it: the clock at the last group's time,
    # `renewAt` the next group's
    middle = [e for e in old_log if e.at < anchor + 3 * 8_000]
    stored = []
    for collection, key, body in fold_all(middle).persisted():
        if collection == "trust":
            old = json.loads(body)
            old["windowStart"] = max(t for t in _every_groups_times(anchor, until)
                                     if t < anchor + 3 * 8_000)
            old["renewAt"] = min(t for t in _every_groups_times(anchor, until)
                                 if t >= anchor + 3 * 8_000)
            body = json.dumps(old).encode()
        stored.append((collection, key, body))
    resumed = ProjectionState.load(stored, secret_key=SECRET_KEY, local_zone=ZONE)
    rest = [e for e in h.events if e.at >= anchor + 3 * 8_000]
    seq = len(middle)
    for event in [*rest, ClockTicked(at=until)]:
        seq, _ = _tick_until(resumed, seq, event.at)
        seq += 1
        fold([[event]], state=resumed, first_seq=seq)
    assert _identities(resumed) == _identities(now)
