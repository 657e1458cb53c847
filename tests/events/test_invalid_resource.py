"""An `InvalidResource` stays small whatever it is about: a violation that echoes a huge
value is cut in the middle, saying how much was left out, and thousands of violations are
shown as the first hundred and a count."""

from __future__ import annotations

from events import InvalidResource, Violation
from events.errors import MAX_VIOLATION_CHARS, MAX_VIOLATIONS_CHARS, MAX_VIOLATIONS_SHOWN


def test_a_huge_value_is_cut_in_the_middle_saying_how_much() -> None:
    value = "a" * 500_000 + "z" * 500_000
    exc = InvalidResource("MeshRetry", [Violation("spec.to[0].default.http.retryOn[0]",
                                                  f"{value!r} is not one of 5xx")])
    [violation] = exc.violations
    assert violation.path == "spec.to[0].default.http.retryOn[0]"
    assert len(violation.message) <= MAX_VIOLATION_CHARS
    assert violation.message.startswith("'aaa")
    assert violation.message.endswith("zzz' is not one of 5xx")  # the rule stays readable
    original = f"{value!r} is not one of 5xx"
    head, note, tail = violation.message.split("…")
    assert note.startswith(" [") and note.endswith(" characters left out] ")
    left_out = int(note[2:].split()[0])
    assert len(head) + left_out + len(tail) == len(original)
    assert original.startswith(head) and original.endswith(tail)
    assert len(str(exc)) < 2 * MAX_VIOLATION_CHARS


def test_short_violations_are_kept_as_they_are() -> None:
    given = [Violation("name", "'Bad' is not a DNS-1123 label"), Violation("", "empty")]
    assert InvalidResource("Mesh", given).violations == tuple(given)


def test_thousands_of_violations_show_the_first_hundred_and_a_count() -> None:
    given = [Violation(f"spec.ports[{i}].port", "70000 is not in 1..65535")
             for i in range(5_000)]
    shown = InvalidResource("MeshService", given).violations
    assert shown[:MAX_VIOLATIONS_SHOWN] == tuple(given[:MAX_VIOLATIONS_SHOWN])
    assert shown[-1] == Violation("", f"{5_000 - MAX_VIOLATIONS_SHOWN} more violations not "
                                      "shown: fix these and submit again")
    assert len(shown) == MAX_VIOLATIONS_SHOWN + 1


def test_many_long_violations_stay_within_the_total_and_count_the_rest() -> None:
    given = [Violation(f"spec.to[{i}].default.http.retryOn[0]", "x" * 5_000 + " is not one")
             for i in range(100)]
    shown = InvalidResource("MeshRetry", given).violations
    assert sum(len(v.path) + len(v.message) for v in shown[:-1]) <= MAX_VIOLATIONS_CHARS
    assert shown[-1].message == (f"{100 - (len(shown) - 1)} more violations not shown: fix "
                                 "these and submit again")
    assert shown[:-1] == InvalidResource("MeshRetry", given[:len(shown) - 1]).violations


def test_one_more_violation_is_one() -> None:
    given = [Violation(f"p{i}", "wrong") for i in range(MAX_VIOLATIONS_SHOWN + 1)]
    assert InvalidResource("Mesh", given).violations[-1].message == (
        "1 more violation not shown: fix these and submit again")
