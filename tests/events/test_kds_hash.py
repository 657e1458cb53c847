"""Kuma's synced names (events.kds_hash) against Kuma's own vectors (reference/multizone.md §1)."""

from events.kds_hash import MAX_DISPLAY_NAME, fnv1a64, hashed_name


def test_hashed_name_matches_kuma_issue_13015_vector() -> None:
    assert hashed_name("default", "a" * 63, "kuma-2", "kuma-system") == (
        "a" * 63 + "-dww29994z4bd2292")


def test_hashed_name_matches_kuma_e2e_backend_of_east() -> None:
    assert hashed_name("default", "backend", "east") == "backend-d2622w4zxzdb6cfw"


def test_fnv1a64_of_empty_input_is_the_offset_basis() -> None:
    assert fnv1a64(b"") == 0xCBF29CE484222325


def test_zone_and_mesh_change_the_hash() -> None:
    names = {hashed_name("default", "redis", "east"), hashed_name("default", "redis", "west"),
             hashed_name("other", "redis", "east")}
    assert len(names) == 3


def test_long_display_name_is_cut_so_the_name_fits_253_characters() -> None:
    name = hashed_name("default", "x" * 300, "east")
    assert len(name) == MAX_DISPLAY_NAME + 17 == 253
    assert name.startswith("x" * MAX_DISPLAY_NAME + "-")
