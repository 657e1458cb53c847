"""A proxy's computed config (`config_json`) as a static Envoy bootstrap, for `envoy --mode
validate`: Envoy checks every field without a control plane."""

from __future__ import annotations

from typing import Any, cast

__all__ = ["static_bootstrap"]


def static_bootstrap(config: dict[str, Any], private_key: str | None = None) -> dict[str, Any]:
    """A bootstrap of `config`: EDS clusters made static with their assignment, listeners
    as they are (Envoy validates every field, priorities and localities included)."""
    assignments = {e["name"]: e["resource"] for e in config["endpoints"]}
    clusters = []
    for entry in config["clusters"]:
        cluster = dict(entry["resource"])
        cluster.pop("@type", None)
        if cluster.get("type") == "EDS":
            cluster.pop("edsClusterConfig")
            cluster["type"] = "STATIC"
            assignment = dict(assignments.get(cluster["name"], {"clusterName": cluster["name"]}))
            assignment.pop("@type", None)
            cluster["loadAssignment"] = assignment
        clusters.append(cluster)
    listeners = []
    for entry in config["listeners"]:
        listener = dict(entry["resource"])
        listener.pop("@type", None)
        listeners.append(listener)
    # with mTLS, secrets come over SDS: here they are static, named as the SDS configs name them
    secrets = []
    for entry in config.get("secrets", []):
        secret = dict(entry["resource"])
        secret.pop("@type", None)
        if "tlsCertificate" in secret:  # the dump redacts the key
            assert private_key is not None
            secret["tlsCertificate"] = {**secret["tlsCertificate"],
                                        "privateKey": {"inlineString": private_key}}
        secrets.append(secret)
    return cast("dict[str, Any]", _without_sds_source({"staticResources": {
        "clusters": clusters, "listeners": listeners, "secrets": secrets}}))


def _without_sds_source(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_sds_source(v) for k, v in value.items() if k != "sdsConfig"}
    if isinstance(value, list):
        return [_without_sds_source(v) for v in value]
    return value
