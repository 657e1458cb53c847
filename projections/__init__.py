"""Pure folds from events to read models, the read-model stores and the projector."""

from projections._match import dataplane_matches
from projections._provenance import zone_tagged
from projections.derive import inbound_serves, is_healthy
from projections.errors import (
    NewerFoldVersion,
    ProjectionError,
    ProjectorHalted,
    SequenceGap,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
)
from projections.export import export_store
from projections.fold import apply_event
from projections.foldversion import FOLD_VERSION, FoldVersions, fold_versions, outdated_advice
from projections.generation import DEFAULT_GRACE_PERIOD_MS, MANAGED_BY, MANAGED_BY_LABEL
from projections.ipam import DEFAULT_CIDRS
from projections.rebuild import Progress, rebuild
from projections.state import Change, ProjectionState
from projections.store import ReadModelStore, open_store, redacted_url, sqlite_path
from projections.views import (
    COLLECTIONS,
    PUBLISHED,
    DataplaneRow,
    Endpoint,
    EndpointsRow,
    GracePeriodRow,
    HostnameGeneratorRow,
    IdentityRow,
    MeshMultiZoneServiceRow,
    MeshRow,
    MeshServiceRow,
    PolicyRow,
    PortEndpoints,
    QuarantinedEvent,
    RevocationRow,
    SigningKeyRow,
    SkippedEvent,
    TrustRow,
    ZoneIngressRow,
    decode_policy_row,
    decode_row,
    decode_typed,
    encode_row,
    signing_key_row_key,
)
from projections.worker import Projector

__all__ = [
    "COLLECTIONS",
    "DEFAULT_CIDRS",
    "DEFAULT_GRACE_PERIOD_MS",
    "FOLD_VERSION",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "PUBLISHED",
    "Change",
    "DataplaneRow",
    "Endpoint",
    "EndpointsRow",
    "FoldVersions",
    "GracePeriodRow",
    "HostnameGeneratorRow",
    "IdentityRow",
    "MeshMultiZoneServiceRow",
    "MeshRow",
    "MeshServiceRow",
    "NewerFoldVersion",
    "PolicyRow",
    "PortEndpoints",
    "Progress",
    "ProjectionError",
    "ProjectionState",
    "Projector",
    "ProjectorHalted",
    "QuarantinedEvent",
    "ReadModelStore",
    "RevocationRow",
    "SequenceGap",
    "SigningKeyRow",
    "SkippedEvent",
    "StoreCorrupt",
    "StoreError",
    "StoreUnavailable",
    "TrustRow",
    "ZoneIngressRow",
    "apply_event",
    "dataplane_matches",
    "decode_policy_row",
    "decode_row",
    "decode_typed",
    "encode_row",
    "export_store",
    "fold_versions",
    "inbound_serves",
    "is_healthy",
    "open_store",
    "outdated_advice",
    "rebuild",
    "redacted_url",
    "signing_key_row_key",
    "sqlite_path",
    "zone_tagged",
]
