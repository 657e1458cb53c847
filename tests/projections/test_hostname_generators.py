"""HostnameGenerators in the fold: defaults, overrides, Kuma's ordering, and every condition
(`Generated`, `TemplateError`, `Collision`) in MeshService status."""

from __future__ import annotations

from typing import Any

from projections.state import ProjectionState
from projections.views import HostnameGeneratorRow
from tests.projections._histories import (
    History,
    dataplane,
    fold,
    fold_all,
    inbound,
    meshservice,
    meshservice_row,
    ms_port,
    persisted,
)

DEFAULT = "local-universal-mesh-service"


def _status(state: ProjectionState, name: str, mesh: str = "default") -> dict[str, Any]:
    """generator -> (its hostname or None, (status, reason, message)), plus the addresses."""
    row = meshservice_row(state, mesh, name)
    assert row is not None
    by_address = {a.hostname_generator_ref.core_name: a.hostname for a in row.status.addresses}
    out: dict[str, Any] = {}
    for g in row.status.hostname_generators:
        [c] = g.conditions
        core = g.hostname_generator_ref.core_name
        out[core] = (by_address.get(core), (c.status, c.reason, c.message))
    assert set(by_address) <= set(out)
    return out


def _web(h: History, *names: str) -> History:
    for i, name in enumerate(names or ("web",)):
        h.register(dataplane("default", f"{name}-1", f"10.0.0.{i + 1}", inbound(80, name)))
    return h


def test_the_zone_defaults_exist_as_rows_from_the_first_event() -> None:
    state = fold_all(History().mesh("default").events)
    rows = {name: persisted(state, "hostnamegenerator", name)
            for name in ("local-mesh-external-service", DEFAULT)}
    assert all(isinstance(r, HostnameGeneratorRow) and r.origin == "default"
               for r in rows.values())
    assert rows[DEFAULT].generator.spec.template == "{{ .DisplayName }}.svc.mesh.local"
    assert rows[DEFAULT].generator.labels["kuma.io/origin"] == "zone"


def test_a_user_generator_adds_an_address_and_statuses_are_sorted_by_generator() -> None:
    h = _web(History().mesh("default"))
    h.apply_generator("a-internal", "{{ .Name }}.{{ .Mesh }}.internal")
    status = _status(fold_all(h.events), "web")
    assert list(status) == ["a-internal", DEFAULT]
    assert status == {
        "a-internal": ("web.default.internal", ("True", "Generated", "")),
        DEFAULT: ("web.svc.mesh.local", ("True", "Generated", "")),
    }
    row = meshservice_row(fold_all(h.events), "default", "web")
    assert row is not None
    assert [a.hostname for a in row.status.addresses] == ["web.default.internal",
                                                          "web.svc.mesh.local"]


def test_a_generator_selects_services_by_their_labels_only() -> None:
    h = _web(History().mesh("default"))
    h.apply(meshservice("default", "shop", ms_port(80), labels={"team": "blue"}))
    h.apply_generator("blue", "{{ .Name }}.blue.local", {"team": "blue"})
    state = fold_all(h.events)
    assert "blue" not in _status(state, "web")
    assert _status(state, "shop")["blue"] == ("shop.blue.local", ("True", "Generated", ""))


def test_a_template_that_fails_for_a_service_gives_it_template_error() -> None:
    h = _web(History().mesh("default"))
    h.apply(meshservice("default", "shop", ms_port(80), labels={"team": "blue"}))
    h.apply_generator("by-team", '{{ .Name }}.{{ label "team" }}.local')
    state = fold_all(h.events)
    assert _status(state, "shop")["by-team"] == ("shop.blue.local", ("True", "Generated", ""))
    assert _status(state, "web")["by-team"] == (
        None, ("False", "TemplateError", "label team not found"))


def test_a_result_that_is_not_a_hostname_is_a_template_error() -> None:
    h = History().mesh("default")
    h.apply(meshservice("default", "shop", ms_port(80),
                        labels={"kuma.io/display-name": "Shop"}))
    status = _status(fold_all(h.events), "shop")
    assert status[DEFAULT][0] is None
    assert status[DEFAULT][1][:2] == ("False", "TemplateError")
    assert "'Shop.svc.mesh.local' is not a valid hostname" in status[DEFAULT][1][2]


def test_a_collision_between_generators_goes_to_the_earlier_created_generator() -> None:
    h = _web(History().mesh("default"), "web", "api")
    # z-first is created before a-second: creation time decides, not the name
    h.apply_generator("z-first", "shared.local", {"kuma.io/display-name": "api"})
    h.apply_generator("a-second", "shared.local", {"kuma.io/display-name": "web"})
    state = fold([[e] for e in h.events])
    assert _status(state, "api")["z-first"] == ("shared.local", ("True", "Generated", ""))
    assert _status(state, "web")["a-second"] == (
        None, ("False", "Collision", "shared.local is already used by MeshService api"))


def test_one_service_may_get_the_same_hostname_from_two_generators() -> None:
    h = _web(History().mesh("default"))
    h.apply_generator("again", "{{ .DisplayName }}.svc.mesh.local")
    status = _status(fold_all(h.events), "web")
    assert status["again"][1][:2] == ("True", "Generated")
    assert status[DEFAULT][1][:2] == ("True", "Generated")


def test_collisions_are_per_mesh() -> None:
    h = History().mesh("default").mesh("other")
    h.register(dataplane("default", "web-1", "10.0.0.1", inbound(80, "web")))
    h.register(dataplane("other", "web-1", "10.0.0.1", inbound(80, "web")))
    state = fold_all(h.events)
    for mesh in ("default", "other"):
        assert _status(state, "web", mesh)[DEFAULT] == (
            "web.svc.mesh.local", ("True", "Generated", ""))


def test_overriding_a_default_replaces_it_and_deleting_the_override_restores_it() -> None:
    h = _web(History().mesh("default"))
    h.apply_generator(DEFAULT, "{{ .Name }}.mesh")
    overridden = fold_all(h.events)
    row = persisted(overridden, "hostnamegenerator", DEFAULT)
    assert row.origin == "user"
    assert _status(overridden, "web")[DEFAULT][0] == "web.mesh"
    h.delete_generator(DEFAULT)
    restored = fold_all(h.events)
    assert persisted(restored, "hostnamegenerator", DEFAULT).origin == "default"
    assert _status(restored, "web")[DEFAULT][0] == "web.svc.mesh.local"


def test_a_default_overridden_to_select_nothing_is_off() -> None:
    h = _web(History().mesh("default"))
    h.apply_generator(DEFAULT, "{{ .Name }}.mesh", {"meshlog.io/none": "x"})
    row = meshservice_row(fold_all(h.events), "default", "web")
    assert row is not None
    assert (row.status.addresses, row.status.hostname_generators) == ([], [])


def test_deleting_a_user_generator_removes_its_addresses() -> None:
    h = _web(History().mesh("default"))
    h.apply_generator("extra", "{{ .Name }}.extra")
    h.delete_generator("extra")
    assert list(_status(fold([[e] for e in h.events]), "web")) == [DEFAULT]
