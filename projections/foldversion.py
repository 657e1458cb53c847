"""Fold versions: which rules of the fold a store's rows were made with.

DESIGN invariant 4 (same log prefix, byte-identical read models) holds within a release. A
release that changes what the fold writes for a given log makes rows a store projected by an
earlier release does not hold (or holds rows it would not make), and continuing that store
does not fix them: only a fold from sequence 1 does. So each store records, per projector,
the `FOLD_VERSION` of the fold that started it from sequence 0 (written with its first
commit, in the same transaction: `ReadModelStore.commit(fold_version=...)`), never changed by
a fold that resumes it. A projector compares it with this code's at start: an older one is
outdated (a warning saying how to rebuild, `/ready`, `meshlog_read_models_outdated`; `meshlog
up` rebuilds its SQLite read models itself, services.runtime.readmodels); a newer one is a
downgrade, refused (`NewerFoldVersion`): folding on would mix two releases' rules.

The bump rule (docs/architecture.md, Fold versions): any change to what the fold writes for
a given log bumps `FOLD_VERSION` and adds a line to its changelog below.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from projections.errors import NewerFoldVersion
from projections.store import ReadModelStore

__all__ = ["FOLD_VERSION", "UNRECORDED_FOLD_VERSION", "FoldVersions", "fold_versions",
           "outdated_advice"]

FOLD_VERSION = 9
"""The version of the fold this code runs. Changelog:

1. Every release before fold versions: a store that records none was folded by one of them.
2. A Mesh's deletion takes its dataplane-token signing keys and revocations
   (`projections.fold._mesh_secrets_deleted`).
3. Another zone's generated MeshService follows its zone's generation rules
   (`projections.remote.refresh`): the existing ports win while one of its Dataplanes has
   them, and it outlives its last Dataplane by that zone's grace period (`expires_at`, an
   `Expiring` condition; the zone's `GracePeriodConfigured` is a `graceperiod` row keyed
   `<zone>/MeshService`) instead of going at once. Another zone's Dataplane (`remotedataplane`)
   has the labels its zone shows (`kuma.io/proxy-type`, `meshlog.io/registered-by` computed,
   no longer copied from the event), and a Mesh of global has `kuma.io/origin: global` in
   every log (`events.labels.mesh_labels`).
4. A zone's Dataplane (`dataplane` row in its zone, `remotedataplane` elsewhere) has the
   `kuma.io/zone: <zone>` tag on every inbound that has tags, the zone of the event's
   provenance over a value the event gives (`projections._provenance.zone_tagged`, Kuma's
   setInboundsClusterTag and global's pinZoneTag); a standalone control plane's, `default`.
   What derives from the tags follows: workload certificates get `kuma://kuma.io/zone/<zone>`,
   a MeshService selector with that tag selects the zone's Dataplanes.
5. Global's zone-token keys (created, retired) and global's revocations of zone tokens are
   folded in every zone's log (`projections.fold._global_zone_token`), as global signs the
   zone tokens of every zone; global's zone-token key rows are keyed `_global/zone-token-<n>`
   with kid `_global/zone-token/_/<n>`, in global's log too (`signing_key_row_key`).
6. A ZoneIngress row has the `kuma.io/display-name` label: its name in the zone that
   registered it (unless the user gave one), also under another log's synced name
   (`projections.zoneingress.ingress_registered`), as a Dataplane has.
7. A mesh's workload certificates renew in 16 groups spread over an eighth of the renewal
   period (`projections.identity.renewal_group`, `window_start`) instead of all at once; a
   `trust` row keeps the log's `clock` its windows hold at (was `window_start`).
8. A deleted zone's synced rows (`remotedataplane`, `remotemeshservice`, its `zoneingress`)
   are kept out of sight as `parkeddataplane`, `parkedmeshservice`, `parkedzoneingress`
   (its events in flight folded there, no longer dropped) and come back, with its
   MeshServices, when it registers again (`projections.remote`); a zone's own log keeps its
   own ZoneIngresses when global deletes it.
9. Only the renewal groups that hold a Dataplane have their times folded
   (`projections._renewal.RenewalIndex`): a mesh's `trust` row keeps the `clock` of its last
   renewal of such a group, of its new issuer, or of a Dataplane joining an empty group, and
   `renew_at` is the next time of a group holding a Dataplane (its `clock` with none); the
   ticker appends ticks only then. Certificates are the same as version 8's for the same log.
"""

UNRECORDED_FOLD_VERSION = 1
"""What a store that has committed without recording a fold version was folded with."""


class FoldVersions(Struct, frozen=True):
    """A store's fold version beside the code's."""

    read_models: int | None
    """The store's; None while nothing is committed (its first commit records the code's)."""
    code: int = FOLD_VERSION

    @property
    def outdated(self) -> bool:
        """Folded by an earlier release's rules: a replay would make other rows."""
        return self.read_models is not None and self.read_models < self.code

    def as_json(self) -> dict[str, Any]:
        """What `/ready` shows: `{"readModels": 1, "code": 3, "outdated": true}`."""
        return {"readModels": self.read_models, "code": self.code, "outdated": self.outdated}


async def fold_versions(store: ReadModelStore, projector: str = "main", *,
                        where: str = "the read models") -> FoldVersions:
    """The fold version of `projector`'s rows in `store` beside this code's.
    `NewerFoldVersion` if the store's is newer (a downgrade): this release must not fold into
    it. `where` names the store in that error."""
    versions = FoldVersions(await store.fold_version(projector))
    if versions.read_models is not None and versions.read_models > versions.code:
        raise NewerFoldVersion(
            f"{where} (projector {projector!r}) were folded with fold version "
            f"{versions.read_models}, newer than this release's {versions.code}: folding on "
            "would mix two releases' rules. Run the release that made them, or rebuild them "
            "with this one into a fresh store (`meshlog replay --database NEW`) and start "
            "with `--database NEW`")
    return versions


def outdated_advice(versions: FoldVersions, projector: str = "main") -> str:
    """The warning of an outdated store: what it means and what to do."""
    return (f"read models of projector {projector!r} were folded with fold version "
            f"{versions.read_models}, this release folds with {versions.code}: they may hold "
            "rows a replay of the log would not make (or lack some) until they are rebuilt. "
            "`meshlog up` on its own SQLite read models rebuilds them itself; otherwise "
            "rebuild them with `meshlog replay --database NEW`, then `meshlog replay --swap` "
            "(meshlog up) or restart the projectors and APIs with `--database NEW` (README, "
            "meshlog replay; docs/operations.md, MeshlogReadModelsOutdated)")
