"""mTLS in the fold: each mesh's trust (`TrustRow`) and each Dataplane's workload
certificate (`IdentityRow`).

What is decided per event, at the event's `at` (order-dependent):

- `refresh_trust`: a Mesh or CA event changes who issues, whom proxies trust, or how long
  certificates live. A new issuer or expiration starts a new sequence of windows at `at`.
- `renew_due`: before any event, the renewal groups whose window ended by its `at` move to
  the window that holds `at` (their Dataplanes' certificates are re-issued). The projector's
  ticker appends a `ClockTicked` at `renew_at` when the log is quiet, as it does for grace
  periods: the times of the groups that hold a Dataplane only (`RenewalIndex`).
- `dataplane_moved`: a Dataplane that joins an empty group moves the mesh's clock to `at`
  (the window it is issued is the one holding `at`), and the next renewal is found again.

Renewals are spread: a mesh's Dataplanes fall in `RENEWAL_GROUPS` groups by a hash of their
name (`renewal_group`), and group `g` renews at 4/5 of a certificate's life plus `g` / 128
of that period (`projections._renewal.window_start`), so a mesh of 1,000 proxies re-issues
~60 certificates at a time, the groups 1/160 of the life apart (9 minutes for Kuma's default
24 h), instead of all at once; each group then renews every 4/5 of the life, as Kuma does.
Every certificate's first window starts when its issuer took effect (`anchor`: a new CA or
expiration re-issues them all, as in Kuma), and lasts 4/5 to 0.9 of its life.

What is derived once per batch (a pure function of the state, so batch boundaries do not
matter): the certificates of the Dataplanes marked stale, issued with
`events.identity.issue_workload` (deterministic) and re-issued only when their inputs
changed, so a Dataplane registered again with the same tags costs a comparison, not a
signature.
"""

from __future__ import annotations

import logging

import msgspec

from events import Mesh, ca_purpose
from events.identity import SealedSecretError
from events.identity.pki import NOT_BEFORE_SKEW_MS, LoadedCa, issue_workload, uri_sans
from events.resources import duration_ms
from projections._renewal import RENEWAL_GROUPS, next_renewal, renewal_group, window_start
from projections.errors import IdentityUnavailable
from projections.state import ProjectionState, dp_key
from projections.views import CaRow, DataplaneRow, IdentityRow, MeshRow, TrustRow

__all__ = ["DEFAULT_EXPIRATION", "RENEWAL_GROUPS", "dataplane_moved", "derive_identities",
           "refresh_trust", "renew_due", "renewal_group", "window_start"]

log = logging.getLogger("meshlog.projector")

DEFAULT_EXPIRATION = "24h"
"""Kuma's default `dpCert.rotation.expiration`."""


def refresh_trust(state: ProjectionState, mesh: str, at: int) -> None:
    """Bring `mesh`'s trust in line with its Mesh and CA rows, at time `at`."""
    old = state.trust(mesh)
    row = state.get("mesh", mesh)
    spec = row.mesh if isinstance(row, MeshRow) else None
    backend = spec.enabled_backend() if spec is not None else None
    ca = state.ca(mesh, backend.name) if backend is not None else None
    if spec is None or backend is None or ca is None:
        if old is not None:
            state.delete("trust", mesh)
            state.stale_identities.update((mesh, n) for n in state.dataplane_names(mesh))
        return
    rotation = backend.dp_cert.rotation if backend.dp_cert is not None else None
    expiration = duration_ms(rotation.expiration if rotation else DEFAULT_EXPIRATION)
    same_issuer = (old is not None and old.backend == backend.name
                   and old.ca_version == ca.meta.version and old.expiration_ms == expiration)
    anchor, clock = (old.anchor, old.clock) if old is not None and same_issuer else (at, at)
    new = _renewing(state, TrustRow(
        mesh=mesh, backend=backend.name, mode=backend.mode,
        roots=_roots(state, spec, backend.name), ca_version=ca.meta.version,
        expiration_ms=expiration, anchor=anchor, clock=clock, renew_at=clock))
    if new != old:
        state.put("trust", mesh, new)
    if not same_issuer:
        state.stale_identities.update((mesh, n) for n in state.dataplane_names(mesh))


def _roots(state: ProjectionState, mesh: Mesh, enabled: str) -> list[str]:
    """The enabled backend's CA, then the other listed backends' (by name), once each."""
    assert mesh.mtls is not None
    names = [enabled, *sorted(b.name for b in mesh.mtls.backends if b.name != enabled)]
    roots: list[str] = []
    for name in names:
        ca = state.ca(mesh.name, name)
        if ca is not None and ca.cert not in roots:
            roots.append(ca.cert)
    return roots


def _renewing(state: ProjectionState, trust: TrustRow) -> TrustRow:
    """`trust` with `renew_at` the next time one of its mesh's renewal groups that holds a
    Dataplane moves to its next window (its `clock` while none holds one: nothing to do)."""
    when = next_renewal(trust, state.renewals.occupied(trust.mesh))
    return msgspec.structs.replace(trust, renew_at=trust.clock if when is None else when)


def renew_due(state: ProjectionState, at: int) -> None:
    """Move the renewal groups whose window ended by `at` to the window holding `at`, in
    every mesh that has one."""
    for mesh in state.renewals_due(at):
        trust = state.trust(mesh)
        assert trust is not None
        moved = _renewing(state, msgspec.structs.replace(trust, clock=at))
        groups = {g for g in state.renewals.occupied(mesh)
                  if window_start(moved, g) != window_start(trust, g)}
        state.put("trust", mesh, moved)
        state.stale_identities.update((mesh, n) for n in state.dataplane_names(mesh)
                                      if renewal_group(mesh, n) in groups)


def dataplane_moved(state: ProjectionState, mesh: str, name: str, at: int) -> None:
    """Dataplane `name` of `mesh` registered or went at `at`. Only the renewal groups that
    hold a Dataplane have their times ticked (`RenewalIndex`); if its group held none before,
    the mesh's clock moves to `at` (the windows of the groups that hold Dataplanes hold
    there too: none of their times passed since the clock, or `renew_due` would have moved
    it), so its first certificate is of the window that holds `at`, never one that ended
    while its group was empty. Either way the mesh's next renewal may change."""
    trust = state.trust(mesh)
    if trust is None:
        return
    joined = state.dataplane(mesh, name) is not None
    if state.renewals.holding(mesh, renewal_group(mesh, name)) != (1 if joined else 0):
        return  # its group held others before and still does
    clock = max(trust.clock, at) if joined else trust.clock
    moved = _renewing(state, msgspec.structs.replace(trust, clock=clock))
    if moved != trust:
        state.put("trust", mesh, moved)


def derive_identities(state: ProjectionState) -> None:
    """Issue, re-issue or remove the certificates of the Dataplanes marked stale."""
    for mesh, name in sorted(state.stale_identities):
        _derive_one(state, mesh, name)
    state.stale_identities.clear()


def _derive_one(state: ProjectionState, mesh: str, name: str) -> None:
    key = dp_key(mesh, name)
    trust = state.trust(mesh)
    dp = state.dataplane(mesh, name)
    if trust is None or dp is None:
        state.delete("identity", key)
        return
    uris = uri_sans(mesh, _tags(dp))
    old = state.identity(mesh, name)
    start = window_start(trust, renewal_group(mesh, name))
    if (old is not None and old.backend == trust.backend and old.ca_version == trust.ca_version
            and old.uris == uris and old.not_before == start - NOT_BEFORE_SKEW_MS):
        return
    ca_row = state.ca(mesh, trust.backend)
    assert ca_row is not None  # refresh_trust keeps a TrustRow only with its CA
    ca = _open_synced(state, ca_row) if ca_row.synced else open_ca(state, ca_row)
    if ca is None:
        state.delete("identity", key)  # fails closed: its inbounds still require mTLS
        return
    if not uris or ca.not_after_ms <= start:
        # a Dataplane with no tagged inbound has no identity to certify; a CA past its expiry
        # issues nothing (its proxies' peers refuse them): neither stops other meshes
        state.delete("identity", key)
        return
    issued = issue_workload(
        ca, mesh=mesh, dataplane=name, uris=uris, not_before_ms=start,
        not_after_ms=start + trust.expiration_ms)
    state.put("identity", key, IdentityRow(
        mesh=mesh, dataplane=name, backend=trust.backend, ca_version=trust.ca_version,
        uris=uris, cert=issued.chain, key=issued.key, not_before=issued.not_before,
        not_after=issued.not_after))


def open_ca(state: ProjectionState, ca: CaRow) -> LoadedCa:
    """The CA with its key, opened with the projector's secret key and parsed once (kept in
    memory for the process)."""
    cached = state.ca_keys.get((ca.mesh, ca.backend, ca.meta.version))
    if cached is not None:
        return cached
    if state.secret_key is None:
        raise IdentityUnavailable(
            f"mesh {ca.mesh!r} has mTLS on, and this projector has no secret key to open its "
            f"CA {ca.backend!r} with: start it with --secret-key-file (the file meshlog up "
            "keeps in its data dir)")
    loaded = LoadedCa(ca.cert, state.secret_key.open(
        ca.key, purpose=ca_purpose(ca.mesh, ca.backend)))
    state.ca_keys[(ca.mesh, ca.backend, ca.meta.version)] = loaded
    return loaded


def _open_synced(state: ProjectionState, ca: CaRow) -> LoadedCa | None:
    """Global's CA in a zone, or None when this projector cannot open it (reported once per
    CA version): that mesh's proxies here get no certificate, other meshes go on."""
    version = (ca.mesh, ca.backend, ca.meta.version)
    if version in state.ca_errors:
        return None
    try:
        return open_ca(state, ca)
    except (IdentityUnavailable, SealedSecretError) as exc:
        reason = (f"mesh {ca.mesh!r}: cannot open CA {ca.backend!r}, which global created "
                  f"and sealed ({exc}); its proxies in this zone get no certificate, so no "
                  "mTLS traffic, until this zone's control plane runs with global's secret key "
                  "(--secret-key-file <global data dir>/secret.key)")
        state.ca_errors[version] = reason
        log.error("%s", reason)
        return None


def _tags(row: DataplaneRow) -> dict[str, set[str]]:
    tags: dict[str, set[str]] = {}
    for inbound in row.dataplane.networking.inbound:
        for k, v in inbound.tags.items():
            tags.setdefault(k, set()).add(v)
    return tags
