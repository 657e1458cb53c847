"""The policy kinds' declarations (`events.policy_kinds`) hold together: every layer that
handles policies through one path relies on these."""

from __future__ import annotations

from typing import Any, get_args

import msgspec
import pytest

from events import (
    KINDS,
    POLICY_KINDS,
    AnyEvent,
    PolicyKind,
    decode_event,
    encode_event,
    kind_of_event,
    kind_of_policy,
    policy_kind,
)
from events.subjects import resource_subject
from projections import COLLECTIONS, PUBLISHED
from tests._policy_samples import SAMPLES, resource

pytestmark = pytest.mark.parametrize("kind", POLICY_KINDS, ids=lambda k: k.type_name)


def test_a_kind_is_found_by_its_name_its_schema_and_its_events(kind: PolicyKind[Any]) -> None:
    policy = resource(kind, "p1")
    applied, deleted = kind.applied_event(policy, 1), kind.deleted_event("default", "p1", 2)

    assert policy_kind(kind.type_name) is kind and kind_of_policy(policy) is kind
    assert type(applied) is kind.applied and type(deleted) is kind.deleted
    assert kind_of_event(applied) is kind_of_event(deleted) is kind
    assert KINDS[kind.type_name] is kind.schema
    assert kind.type_name in SAMPLES  # the shared tests have one of each kind


def test_its_events_are_in_the_log_s_union_and_round_trip(kind: PolicyKind[Any]) -> None:
    applied = kind.applied_event(resource(kind, "p1"), 1)
    deleted = kind.deleted_event("default", "p1", 2)

    assert {kind.applied, kind.deleted} <= set(get_args(AnyEvent))
    subject = resource_subject(kind.type_name, "default", "p1")
    assert decode_event(encode_event(applied), seq=1, subject=subject) == applied
    assert decode_event(encode_event(deleted), seq=2, subject=subject) == deleted
    tags = {kind.applied.__struct_config__.tag, kind.deleted.__struct_config__.tag}
    assert tags == {f"{kind.singular}.applied", f"{kind.singular}.deleted"}


def test_its_rows_have_a_published_collection_and_its_subjects_its_singular(
        kind: PolicyKind[Any]) -> None:
    assert kind.collection in COLLECTIONS and kind.collection in PUBLISHED
    assert resource_subject(kind.type_name, "default", "p1", zone="z1") == (
        f"meshlog.ev.z1.{kind.singular}.default.p1")


def test_a_deleted_event_encodes_as_its_fields_only(kind: PolicyKind[Any]) -> None:
    # the base classes add no field: the encoding every kind's events always had
    assert msgspec.json.decode(encode_event(kind.deleted_event("m", "n", 7))) == {
        "event": f"{kind.singular}.deleted", "mesh": "m", "name": "n", "at": 7}
