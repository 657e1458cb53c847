"""What a proxy of a mesh with mTLS gets (issue 11): secrets by SDS under Kuma's names,
inbound chains per mode with RBAC where it belongs, outbound clusters originating mTLS.
Real traffic through real Envoys: tests/integration/test_mtls.py."""

from __future__ import annotations

from typing import Any, cast

import pytest

from tests.projections._histories import History
from tests.xds_gateway._ads import Projection, dataplane, event_for
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.resources.node import ProxyNode
from xds_gateway.view import ProjectionView


def _config(mode: str, *, node: ProxyNode | None = None) -> dict[str, list[dict[str, Any]]]:
    h = History()
    h.mtls("default", "ca-1", "ca-2", enabled="ca-1", mode=mode)
    projection = Projection()
    view = ProjectionView()
    view.apply(projection.fold(h.events))
    view.apply(projection.fold([
        event_for(dataplane("backend-1", "10.0.0.2", 8080, "backend"), at=10),
        event_for(dataplane("web-1", "10.0.0.4", 8080, "web"), at=11)]))
    return config_json(view, "default", "backend-1", ResourceCache(), node=node)


def _by_name(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e["resource"] for e in entries}


def test_secrets_have_kumas_names_and_the_key_never_shows() -> None:
    secrets = _by_name(_config("STRICT")["secrets"])
    assert set(secrets) == {"identity_cert:secret:default", "mesh_ca:secret:default"}
    identity = secrets["identity_cert:secret:default"]["tlsCertificate"]
    assert identity["privateKey"] == {"inlineString": "[redacted]"}
    assert "certificateChain" in identity
    # both listed backends' CAs are trusted: a CA change drops nothing
    bundle = secrets["mesh_ca:secret:default"]["validationContext"]["trustedCa"]
    assert "inlineBytes" in bundle


def test_strict_inbound_requires_mtls_and_runs_rbac_first() -> None:
    listeners = _by_name(_config("STRICT")["listeners"])
    inbound = listeners["inbound:10.0.0.2:8080"]
    assert "listenerFilters" not in inbound
    (chain,) = inbound["filterChains"]
    assert [f["name"] for f in chain["filters"]] == ["envoy.filters.network.rbac",
                                                      "envoy.filters.network.tcp_proxy"]
    tls = chain["transportSocket"]["typedConfig"]
    assert tls["requireClientCertificate"] is True
    common = tls["commonTlsContext"]
    assert common["tlsCertificateSdsSecretConfigs"][0]["name"] == "identity_cert:secret:default"
    validation = common["combinedValidationContext"]
    assert validation["validationContextSdsSecretConfig"]["name"] == "mesh_ca:secret:default"
    assert validation["defaultValidationContext"]["matchTypedSubjectAltNames"] == [
        {"sanType": "URI", "matcher": {"prefix": "spiffe://default/"}}]


def test_permissive_inbound_has_rbac_on_the_mtls_chain_only() -> None:
    inbound = _by_name(_config("PERMISSIVE")["listeners"])["inbound:10.0.0.2:8080"]
    assert [f["name"] for f in inbound["listenerFilters"]] == [
        "envoy.filters.listener.tls_inspector"]
    chains = {(c["filterChainMatch"]["transportProtocol"],
               tuple(c["filterChainMatch"].get("applicationProtocols", ()))):
              [f["name"] for f in c["filters"]] for c in inbound["filterChains"]}
    assert chains == {
        ("tls", ("kuma",)): ["envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"],
        ("tls", ()): ["envoy.filters.network.tcp_proxy"],
        ("raw_buffer", ()): ["envoy.filters.network.tcp_proxy"],
    }


def test_outbound_clusters_originate_mtls_with_sni_and_the_exact_san() -> None:
    clusters = _by_name(_config("STRICT")["clusters"])
    web = next(c for n, c in clusters.items() if n.startswith("default_web_"))
    tls = web["transportSocket"]["typedConfig"]
    assert tls["sni"].endswith(".web.8080.default.ms")
    common = tls["commonTlsContext"]
    assert common["alpnProtocols"] == ["kuma"]
    assert common["combinedValidationContext"]["defaultValidationContext"][
        "matchTypedSubjectAltNames"] == [
            {"sanType": "URI", "matcher": {"exact": "spiffe://default/web"}}]


_GRPC = ProxyNode(user_agent_name="gRPC Python")


def _grpc_tls(cluster: dict[str, Any]) -> dict[str, Any]:
    socket = cluster["transportSocket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    return cast("dict[str, Any]", socket["typedConfig"])


def test_strict_inbound_offers_h2_after_kuma_for_grpc_clients() -> None:
    """gRPC offers ALPN `h2` only and refuses a handshake that negotiates none; Envoy picks in
    its own order, so an Envoy client (`kuma` only) still gets `kuma`."""
    (chain,) = _by_name(_config("STRICT")["listeners"])["inbound:10.0.0.2:8080"]["filterChains"]
    assert chain["transportSocket"]["typedConfig"]["commonTlsContext"]["alpnProtocols"] == [
        "kuma", "h2"]


def test_a_proxyless_grpc_client_in_a_strict_mesh_gets_a29_mtls_clusters() -> None:
    """gRFC A29: certificate provider instances from the client's bootstrap (no SDS, which
    gRPC NACKs), the service's identity as an exact SAN in `match_subject_alt_names`."""
    clusters = _by_name(_config("STRICT", node=_GRPC)["clusters"])
    tls = _grpc_tls(clusters["default_web___msvc_8080"])
    assert tls["sni"].endswith(".web.8080.default.ms")
    assert tls["commonTlsContext"] == {
        "tlsCertificateProviderInstance": {"instanceName": "meshlog"},
        "validationContext": {
            "caCertificateProviderInstance": {"instanceName": "meshlog"},
            "matchSubjectAltNames": [{"exact": "spiffe://default/web"}]}}


def test_a_proxyless_grpc_client_in_a_permissive_mesh_gets_plaintext_clusters() -> None:
    config = _config("PERMISSIVE", node=_GRPC)
    assert all("transportSocket" not in c["resource"] for c in config["clusters"]
               if c["name"].endswith("_msvc_8080"))


def test_an_envoy_and_a_grpc_client_get_their_own_cluster_from_one_cache() -> None:
    """Same name, other content: the encode-once cache keys them apart (rule 9)."""
    h = History()
    h.mtls("default", "ca-1", enabled="ca-1", mode="STRICT")
    projection, view, cache = Projection(), ProjectionView(), ResourceCache()
    view.apply(projection.fold(h.events))
    view.apply(projection.fold([
        event_for(dataplane("backend-1", "10.0.0.2", 8080, "backend"), at=10),
        event_for(dataplane("web-1", "10.0.0.4", 8080, "web"), at=11)]))
    envoy = _by_name(config_json(view, "default", "backend-1", cache)["clusters"])
    grpc = _by_name(config_json(view, "default", "backend-1", cache, node=_GRPC)["clusters"])
    name = "default_web___msvc_8080"
    assert "tlsCertificateSdsSecretConfigs" in envoy[name]["transportSocket"]["typedConfig"][
        "commonTlsContext"]
    assert "tlsCertificateProviderInstance" in _grpc_tls(grpc[name])["commonTlsContext"]


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE"])
def test_a_proxyless_clients_explicit_outbound_cluster_takes_the_meshs_mode(mode: str) -> None:
    """A cluster only an explicit outbound adds (backend is not among the client's reachable
    backends) is mTLS in a STRICT mesh, plaintext in a PERMISSIVE one."""
    client = dataplane("client-1", "10.0.0.9", 7070, "client")
    client["networking"].update(
        transparentProxying={"reachableBackends": {"refs": [{"kind": "MeshService",
                                                             "name": "web"}]}},
        outbound=[{"port": 18080, "backendRef": {"kind": "MeshService", "name": "backend",
                                                 "port": 8080}}])
    h = History()
    h.mtls("default", "ca-1", "ca-2", enabled="ca-1", mode=mode)
    projection, view = Projection(), ProjectionView()
    view.apply(projection.fold(h.events))
    view.apply(projection.fold([
        event_for(dataplane("backend-1", "10.0.0.2", 8080, "backend"), at=10),
        event_for(dataplane("web-1", "10.0.0.4", 8080, "web"), at=11),
        event_for(client, at=12)]))
    config = config_json(view, "default", "client-1", ResourceCache(), node=_GRPC)
    clusters = _by_name(config["clusters"])
    backend = clusters["default_backend___msvc_8080"]  # the explicit outbound's alone
    if mode == "STRICT":
        assert _grpc_tls(backend)["commonTlsContext"]["validationContext"][
            "matchSubjectAltNames"] == [{"exact": "spiffe://default/backend"}]
    else:
        assert "transportSocket" not in backend
