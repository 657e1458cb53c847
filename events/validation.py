"""Semantic rules for resources, after their shape is known to be right.

Every rule appends a `Violation(path, message)`; nothing stops at the first problem. The rules
follow Kuma (reference/kuma-behaviour.md): tag syntax, `kuma.io/service` on tagged inbounds,
addresses, admin-port collisions, backend references, MeshService ports, HostnameGenerator
selectors (exactly one kind) and templates (they must parse: `events.hostname_template`),
MeshTrafficPermission targetRefs (the kinds each place takes, and their name, labels, tags),
MeshTimeout targetRefs and durations (Go's format; Kuma's sign rules), MeshMultiZoneService
selectors and ports, ZoneIngress addresses and ports. A policy's rules are its kind's
(`events.policy_kinds`: MeshTrafficPermission's and MeshTimeout's here, MeshRetry's and
MeshCircuitBreaker's in their own modules, with this one's helpers).

`deprecations` are Kuma's warnings: accepted, and said back to whoever applied the resource.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from typing import assert_never

from events.errors import Violation
from events.hostname_template import TemplateSyntaxError, parse_template
from events.resources import (
    Dataplane,
    HostnameGenerator,
    Mesh,
    MeshMultiZoneService,
    MeshService,
    MeshTimeout,
    MeshTimeoutConf,
    MeshTrafficPermission,
    Resource,
    TargetRef,
    ZoneIngress,
    duration_ms,
    go_duration_ns,
    is_resource_name,
)

__all__ = ["SERVICE_TAG", "deprecations", "is_dns1035_label", "validate"]

SERVICE_TAG = "kuma.io/service"
# fullmatch everywhere: `$` would let a trailing newline through.
_TAG_KEY = re.compile(r"[a-zA-Z0-9.\-_:/]*")
_TAG_VALUE = re.compile(r"[a-zA-Z0-9.\-_:]*")
_LABEL = r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def is_dns1035_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1035.fullmatch(value))


def validate(resource: Resource) -> list[Violation]:
    out: list[Violation] = []
    _labels(resource.labels, "labels", out)
    match resource:
        case Mesh():
            if "." in resource.name:
                out.append(Violation("name", f"{resource.name!r} must not contain '.': proxies "
                                     "are named <mesh>.<dataplane>, so a mesh name is one label"))
            _mesh_mtls(resource, out)
        case Dataplane():
            _dataplane(resource, out)
        case MeshService():
            _meshservice(resource, out)
        case HostnameGenerator():
            _hostname_generator(resource, out)
        case MeshMultiZoneService():
            _mesh_multi_zone_service(resource, out)
        case ZoneIngress():
            _zone_ingress(resource, out)
        case _:
            # a policy: its kind's rules (`events.policy_kinds`), which use this module's
            # helpers, so the registry imports this module: a cycle, broken here
            from events.policy_kinds import kind_of_policy

            kind = kind_of_policy(resource)
            if kind is None:
                raise TypeError(f"no validation for {type(resource).__name__}")
            kind.rules(resource, out)
    return out


def _labels(labels: dict[str, str], path: str, out: list[Violation]) -> None:
    for key, value in labels.items():
        if not key or not _TAG_KEY.fullmatch(key):
            out.append(Violation(f'{path}["{key}"]',
                                 "key must match ^[a-zA-Z0-9.\\-_:/]*$ and not be empty"))
        if not value or not _TAG_VALUE.fullmatch(value):
            out.append(Violation(f'{path}["{key}"]',
                                 f"{value!r} must match ^[a-zA-Z0-9.\\-_:]*$ and not be empty"))


def _address(value: str, path: str, out: list[Violation], *, allow_dns: bool = True) -> None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        if not allow_dns or len(value) > 253 or not _HOSTNAME.fullmatch(value):
            what = "an IP address or DNS name" if allow_dns else "an IP address"
            out.append(Violation(path, f"{value!r} is not {what}"))
        return
    if ip.is_unspecified:
        out.append(Violation(path, f"{value!r} must not be the unspecified address"))


MIN_CERT_EXPIRATION_MS = 10_000
MAX_CERT_EXPIRATION_MS = 365 * 86_400_000


def _mesh_mtls(mesh: Mesh, out: list[Violation]) -> None:
    mtls = mesh.mtls
    if mtls is None:
        return
    names = Counter(b.name for b in mtls.backends)
    for i, backend in enumerate(mtls.backends):
        path = f"mtls.backends[{i}]"
        if names[backend.name] > 1:
            out.append(Violation(f"{path}.name", f"{backend.name!r} is used by more than one "
                                 "backend"))
        rotation = backend.dp_cert.rotation if backend.dp_cert is not None else None
        if rotation is not None:
            ms = duration_ms(rotation.expiration)
            if not MIN_CERT_EXPIRATION_MS <= ms <= MAX_CERT_EXPIRATION_MS:
                out.append(Violation(
                    f"{path}.dpCert.rotation.expiration",
                    f"{rotation.expiration!r} must be between 10s and 365d"))
        conf = backend.conf
        if backend.type == "provided":
            # the key is needed until the log has the CA (events.commands.ca checks that):
            # the stored Mesh has none, and `get -o yaml | apply` must work
            if conf is None or conf.cert is None or not conf.cert.inline_string:
                out.append(Violation(f"{path}.conf.cert.inlineString",
                                     "a provided backend needs its CA certificate's PEM here"))
        elif conf is not None and (conf.cert is not None or conf.key is not None):
            out.append(Violation(f"{path}.conf", "a builtin backend makes its own CA: "
                                 "cert and key belong to type provided"))
    if mtls.enabled_backend is not None and mtls.enabled_backend not in names:
        known = ", ".join(repr(n) for n in names) or "none"
        out.append(Violation("mtls.enabledBackend", f"{mtls.enabled_backend!r} is not one of "
                             f"mtls.backends (have {known})"))


def _dataplane(dp: Dataplane, out: list[Violation]) -> None:
    net = dp.networking
    _address(net.address, "networking.address", out)
    if net.advertised_address is not None:
        _address(net.advertised_address, "networking.advertisedAddress", out)
    if not net.inbound:
        out.append(Violation("networking.inbound", "must have at least one inbound"))
    listeners: Counter[tuple[str, int]] = Counter()
    for i, inbound in enumerate(net.inbound):
        path = f"networking.inbound[{i}]"
        if inbound.address is not None:
            _address(inbound.address, f"{path}.address", out, allow_dns=False)
        if inbound.service_address is not None:
            _address(inbound.service_address, f"{path}.serviceAddress", out, allow_dns=False)
        _labels(inbound.tags, f"{path}.tags", out)
        if inbound.tags and SERVICE_TAG not in inbound.tags:
            out.append(Violation(f"{path}.tags", f'"{SERVICE_TAG}" is required'))
        if inbound.name is not None and not inbound.name:
            out.append(Violation(f"{path}.name", "must not be empty"))
        if inbound.service_probe is not None:
            for field in ("interval", "timeout"):
                value = getattr(inbound.service_probe, field)
                if float(value[:-1]) <= 0:  # the type's pattern made it `<digits>[.<digits>]s`
                    out.append(Violation(f"{path}.serviceProbe.{field}",
                                         f"{value!r} must be longer than 0s"))
        listeners[(inbound.address or net.address, inbound.port)] += 1
    for (address, port), n in listeners.items():
        if n > 1:
            out.append(Violation("networking.inbound", f"{n} inbounds listen on {address}:{port}"))
    outbound_ports: Counter[tuple[str, int]] = Counter()
    for i, outbound in enumerate(net.outbound):
        path = f"networking.outbound[{i}]"
        if outbound.address is not None:
            _address(outbound.address, f"{path}.address", out, allow_dns=False)
        outbound_ports[(outbound.address or "127.0.0.1", outbound.port)] += 1
        if (outbound.backend_ref is None) == (outbound.tags is None):
            out.append(Violation(path, "needs exactly one of backendRef or tags"))
        ref = outbound.backend_ref
        if ref is not None and (ref.name is None) == (ref.labels is None):
            out.append(Violation(f"{path}.backendRef", "needs exactly one of name or labels"))
        if outbound.tags is not None:
            _labels(outbound.tags, f"{path}.tags", out)
            if SERVICE_TAG not in outbound.tags:
                out.append(Violation(f"{path}.tags", f'"{SERVICE_TAG}" is required'))
    for (address, port), n in outbound_ports.items():
        if n > 1:
            out.append(Violation("networking.outbound",
                                 f"{n} outbounds listen on {address}:{port}"))
    tp = net.transparent_proxying
    if tp is not None and tp.reachable_backends is not None:
        for i, rref in enumerate(tp.reachable_backends.refs):
            if rref.name is not None and rref.labels is not None:
                out.append(Violation(
                    f"networking.transparentProxying.reachableBackends.refs[{i}]",
                    "name and labels are mutually exclusive",
                ))
    if net.admin is not None:
        used = {i.port for i in net.inbound} | {o.port for o in net.outbound}
        if net.admin.port in used:
            out.append(Violation(
                "networking.admin.port",
                f"{net.admin.port} collides with an inbound or outbound port",
            ))


def _meshservice(ms: MeshService, out: list[Violation]) -> None:
    spec = ms.spec
    if not spec.selector.dataplane_tags:
        out.append(Violation("spec.selector.dataplaneTags", "must select at least one tag"))
    _labels(spec.selector.dataplane_tags, "spec.selector.dataplaneTags", out)
    if not spec.ports:
        out.append(Violation("spec.ports", "must have at least one port"))
    numbers = Counter(p.port for p in spec.ports)
    names = Counter(p.name for p in spec.ports if p.name is not None)
    for i, port in enumerate(spec.ports):
        path = f"spec.ports[{i}]"
        if numbers[port.port] > 1:
            out.append(Violation(f"{path}.port", f"{port.port} is used by more than one port"))
        if port.name is not None:
            numeric = port.name.isascii() and port.name.isdigit()
            if not is_dns1035_label(port.name) and not numeric:
                out.append(Violation(f"{path}.name", f"{port.name!r} is not a DNS-1035 label"))
            if names[port.name] > 1:
                out.append(Violation(f"{path}.name",
                                     f"{port.name!r} is used by more than one port"))
        match port.target_port:
            case None | int():
                pass
            case str() as target if not target:
                out.append(Violation(f"{path}.targetPort", "must not be empty"))
            case str():
                pass
            case _:
                assert_never(port.target_port)


def _hostname_generator(hg: HostnameGenerator, out: list[Violation]) -> None:
    selector = hg.spec.selector
    chosen = [(path, s) for path, s in (("meshService", selector.mesh_service),
                                        ("meshExternalService", selector.mesh_external_service),
                                        ("meshMultiZoneService", selector.mesh_multi_zone_service))
              if s is not None]
    if len(chosen) != 1:
        out.append(Violation("spec.selector", "exactly one of meshService, meshExternalService "
                             f"or meshMultiZoneService must be set (got {len(chosen)})"))
    for path, s in chosen:
        _labels(s.match_labels, f"spec.selector.{path}.matchLabels", out)
    if not hg.spec.template.strip():
        out.append(Violation("spec.template", "must not be empty"))
        return
    try:
        parse_template(hg.spec.template)
    except TemplateSyntaxError as exc:
        out.append(Violation("spec.template", f"{hg.spec.template!r} is not a valid template: "
                             f"{exc}"))


# --- MeshTrafficPermission ------------------------------------------------------------------

_TOP_KINDS = ("Mesh", "MeshSubset", "MeshService", "Dataplane")
"""What a MeshTrafficPermission guards: the inbounds of these proxies."""
_FROM_KINDS = ("Mesh", "MeshSubset", "MeshService", "MeshServiceSubset")
"""Who a `from[]` entry is about: clients, told apart by their certificates' SANs."""


def mesh_traffic_permission_rules(mtp: MeshTrafficPermission, out: list[Violation]) -> None:
    _target_ref(mtp.spec.target_ref, "spec.targetRef", _TOP_KINDS, out)
    if not mtp.spec.from_:
        out.append(Violation("spec.from", "must have at least one entry (with mTLS on, a "
                             "client that no entry allows is denied)"))
    for i, entry in enumerate(mtp.spec.from_):
        _target_ref(entry.target_ref, f"spec.from[{i}].targetRef", _FROM_KINDS, out,
                    clients=True)


def _target_ref(ref: TargetRef, path: str, kinds: tuple[str, ...], out: list[Violation], *,
                clients: bool = False) -> None:
    """Kuma's rules of a targetRef (`pkg/plugins/policies/matchers/validators`): which kinds
    this place takes, and which of name, labels and tags each kind has. `clients`: a
    `from[]` one, whose name is a client's service (a tag value in its certificate)."""
    if ref.labels is not None:
        _labels(ref.labels, f"{path}.labels", out)
    if ref.tags is not None:
        _labels(ref.tags, f"{path}.tags", out)
    if ref.kind not in kinds:
        out.append(Violation(f"{path}.kind", f"{ref.kind!r} is not one of {', '.join(kinds)}"))
        return  # what the other fields may be depends on the kind
    named = ref.kind in ("MeshService", "MeshServiceSubset", "Dataplane")
    if ref.name is not None and not named:
        out.append(Violation(f"{path}.name", f"{ref.name!r} is not allowed with kind "
                             f"{ref.kind}"))
    if ref.labels is not None and ref.kind != "Dataplane":
        out.append(Violation(f"{path}.labels", f"are only for kind Dataplane, not {ref.kind}"))
    if ref.tags is not None and ref.kind not in ("MeshSubset", "MeshServiceSubset"):
        out.append(Violation(f"{path}.tags", "are only for kinds MeshSubset and "
                             f"MeshServiceSubset, not {ref.kind}"))
    if ref.kind == "Dataplane":
        if ref.name is None and ref.labels is None:
            out.append(Violation(path, "kind Dataplane needs name (one Dataplane) or labels "
                                 "(every Dataplane with them)"))
        elif ref.name is not None and ref.labels is not None:
            out.append(Violation(path, "kind Dataplane takes name or labels, not both"))
    elif named and ref.name is None:
        out.append(Violation(f"{path}.name", f"is required with kind {ref.kind}"))
    if ref.name is not None and named:
        _target_name(ref.name, ref.kind, f"{path}.name", out, clients=clients)
    if ref.kind == "MeshServiceSubset" and ref.tags and SERVICE_TAG in ref.tags:
        out.append(Violation(f'{path}.tags["{SERVICE_TAG}"]',
                             "must not be set: the service is the targetRef's name"))


def _target_name(name: str, kind: str, path: str, out: list[Violation], *,
                 clients: bool) -> None:
    if clients:  # a `kuma.io/service` value, as the client's certificate carries it
        if not name or not _TAG_VALUE.fullmatch(name):
            out.append(Violation(path, f"{name!r} is not a service name (a {SERVICE_TAG} "
                                 "value): must match ^[a-zA-Z0-9.\\-_:]*$ and not be empty"))
    elif not is_resource_name(name):
        out.append(Violation(path, f"{name!r} is not a valid {kind} name (RFC 1123 subdomain: "
                             "lower-case letters, digits, '-' and '.', starting and ending "
                             "with a letter or digit)"))


# --- MeshTimeout ----------------------------------------------------------------------------

_TO_KINDS = ("Mesh", "MeshService")
"""The destinations a MeshTimeout `to[]` entry names (Kuma's, outside MeshGateway)."""
_HTTP_FIELDS = ("requestTimeout", "streamIdleTimeout", "maxStreamDuration",
                "maxConnectionDuration", "requestHeadersTimeout")


def mesh_timeout_rules(mt: MeshTimeout, out: list[Violation]) -> None:
    """Kuma's rules (`meshtimeout/api/v1alpha1/validator.go`, 2.14): the top-level
    targetRef's kinds, `to[]` names Mesh or a MeshService, `from[]` Mesh; at least one entry;
    `rules[]` only without `to[]` and `from[]`; each `default` sets something;
    `connectionTimeout` above 0, the others not negative. An `http` section with only
    `requestHeadersTimeout` is accepted (Kuma's "at least one timeout in this section"
    leaves that field out, and so refuses it). Not Kuma's: a rule's `matches` (by SPIFFE ID
    or SNI) is refused, as meshlog applies a rule to all of an inbound's traffic."""
    spec = mt.spec
    _target_ref(spec.target_ref, "spec.targetRef", _TOP_KINDS, out)
    if spec.rules and (spec.to or spec.from_):
        out.append(Violation("spec", "fields 'to' and 'from' must be empty when 'rules' is "
                             "defined"))
    if not spec.to and not spec.from_ and not spec.rules:
        out.append(Violation("spec", "at least one of 'from', 'to' or 'rules' has to be "
                             "defined"))
    for i, rule in enumerate(spec.rules):
        if rule.matches:
            out.append(Violation(f"spec.rules[{i}].matches", "is not supported: meshlog "
                                 "cannot tell an inbound's traffic apart by SPIFFE ID or SNI, "
                                 "so a rule applies to all of it (leave matches out)"))
        _timeout_conf(rule.default, f"spec.rules[{i}].default", out)
    for i, to in enumerate(mt.spec.to):
        _target_ref(to.target_ref, f"spec.to[{i}].targetRef", _TO_KINDS, out)
        _timeout_conf(to.default, f"spec.to[{i}].default", out)
    for i, source in enumerate(mt.spec.from_):
        _target_ref(source.target_ref, f"spec.from[{i}].targetRef", ("Mesh",), out)
        _timeout_conf(source.default, f"spec.from[{i}].default", out)


def _timeout_conf(conf: MeshTimeoutConf, path: str, out: list[Violation]) -> None:
    if conf.connection_timeout is None and conf.idle_timeout is None and conf.http is None:
        out.append(Violation(path, "at least one timeout should be configured"))
        return
    _go_duration(conf.connection_timeout, f"{path}.connectionTimeout", out, positive=True)
    _go_duration(conf.idle_timeout, f"{path}.idleTimeout", out)
    http = conf.http
    if http is None:
        return
    values = (http.request_timeout, http.stream_idle_timeout, http.max_stream_duration,
              http.max_connection_duration, http.request_headers_timeout)
    if all(v is None for v in values):
        out.append(Violation(f"{path}.http", "at least one timeout in this section should be "
                             "configured"))
    for name, value in zip(_HTTP_FIELDS, values, strict=True):
        _go_duration(value, f"{path}.http.{name}", out)


def _go_duration(value: str | None, path: str, out: list[Violation], *,
                 positive: bool = False) -> None:
    if value is None:
        return
    ns = go_duration_ns(value)
    if ns is None:
        out.append(Violation(path, f"{value!r} is not a duration (Go's format: a number and a "
                             "unit of ns, us, ms, s, m, h, e.g. 500ms, 15s, 1h30m)"))
    elif positive and ns <= 0:
        out.append(Violation(path, f"{value!r} must be greater than 0s"))
    elif ns < 0:
        out.append(Violation(path, f"{value!r} must not be negative"))


# --- MeshMultiZoneService -------------------------------------------------------------------


def _mesh_multi_zone_service(mmzs: MeshMultiZoneService, out: list[Violation]) -> None:
    """Kuma's rules (`meshmultizoneservice/api/v1alpha1/validator.go`): a selector with at
    least one label, at least one port, a port name that is not empty. meshlog adds one: a
    port number listed twice (it would be two listeners on one VIP and port)."""
    labels = mmzs.spec.selector.mesh_service.match_labels
    path = "spec.selector.meshService.matchLabels"
    if not labels:
        out.append(Violation(path, "{} must not be empty: a MeshMultiZoneService selects "
                             "MeshServices by at least one label (e.g. kuma.io/display-name)"))
    _labels(labels, path, out)
    if not mmzs.spec.ports:
        out.append(Violation("spec.ports", "[] must list at least one port"))
    seen: set[int] = set()
    for i, port in enumerate(mmzs.spec.ports):
        if port.name is not None and not port.name:
            out.append(Violation(f"spec.ports[{i}].name", "'' must not be empty (leave it out "
                                 "for an unnamed port)"))
        if port.port in seen:
            out.append(Violation(f"spec.ports[{i}].port", f"{port.port} is listed twice"))
        seen.add(port.port)


# --- ZoneIngress ----------------------------------------------------------------------------

_ZONE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _zone_ingress(zi: ZoneIngress, out: list[Violation]) -> None:
    """Kuma's rules (`zone_ingress_validator.go`): an address and a port; the advertised
    address and port go together (other zones dial both). meshlog adds: the address is an IP
    (Envoy binds it; 0.0.0.0 listens on every address), the advertised address is an IP or
    DNS name, the admin port is not the ingress's port, `zone` is a zone name."""
    net = zi.networking
    try:
        ipaddress.ip_address(net.address)
    except ValueError:
        out.append(Violation("networking.address", f"{net.address!r} is not an IP address "
                             "(the ingress Envoy listens on it; 0.0.0.0 for every address)"))
    if net.advertised_address is not None:
        _address(net.advertised_address, "networking.advertisedAddress", out)
    if (net.advertised_address is None) != (net.advertised_port is None):
        given, missing = (("advertisedAddress", "advertisedPort")
                          if net.advertised_port is None
                          else ("advertisedPort", "advertisedAddress"))
        out.append(Violation(f"networking.{missing}", f"is required with {given}: other zones "
                             "reach the ingress at both (or leave both out)"))
    if net.admin is not None and net.admin.port == net.port:
        out.append(Violation("networking.admin.port", f"{net.admin.port} collides with "
                             "networking.port"))
    if zi.zone is not None and not _ZONE.fullmatch(zi.zone):
        out.append(Violation("zone", f"{zi.zone!r} is not a zone name (an RFC 1123 label)"))
    for i, service in enumerate(zi.available_services):
        _labels(service.tags, f"availableServices[{i}].tags", out)


def deprecations(resource: Resource) -> list[str]:
    """Kuma's deprecation warnings of a valid resource: it is accepted, and the writer is told.
    A MeshMultiZoneService whose name is not a DNS-1035 label (Kuma's `Deprecations`): its
    hostname and SNI are made from the name."""
    if isinstance(resource, MeshMultiZoneService) and not is_dns1035_label(resource.name):
        return [f"Invalid name: {resource.name!r}. It does not conform to the DNS format "
                "(RFC 1035: at most 63 lower-case letters, digits and '-', starting with a "
                "letter and ending with a letter or digit). This is deprecated."]
    return []
