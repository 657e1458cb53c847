"""A small run of `meshlog bench rebuild`: the command seeds a log, reads it raw, rebuilds it
into a fresh store and ends with one JSON line. It checks what must hold whatever the speed:
every event folded, the same read models whatever the batch size. Never the rates."""

from __future__ import annotations

import json
import subprocess

import pytest

from projections.rebuild import REBUILD_BATCH
from tests.harness import VENV_BIN

pytestmark = pytest.mark.integration


def _bench(*args: str) -> dict[str, object]:
    done = subprocess.run([str(VENV_BIN / "meshlog"), "bench", "rebuild", *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def test_bench_rebuild_folds_every_event_into_the_same_rows_whatever_the_batch() -> None:
    small = _bench("--events", "4000", "--batch", "300")
    default = _bench("--events", "4000")
    assert small["events"] == default["events"] == 4000
    assert (small["max_batch"], default["max_batch"]) == (300, REBUILD_BATCH)
    assert small["read_model_rows"] == default["read_model_rows"]
    assert small["read_model_sha256"] == default["read_model_sha256"]
    assert isinstance(small["read_model_rows"], int) and small["read_model_rows"] > 3000
    for figures in (small, default):
        for key in ("raw_ordered_read_events_per_s", "rebuild_events_per_s",
                    "rebuild_to_raw_ratio", "rebuild_s", "rebuild_cpu_s", "rebuild_peak_rss_mb"):
            value = figures[key]
            assert isinstance(value, int | float) and value > 0, (key, figures)


def test_bench_rebuild_refuses_a_batch_that_is_not_a_positive_number() -> None:
    done = subprocess.run([str(VENV_BIN / "meshlog"), "bench", "rebuild", "--batch", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--batch" in done.stderr and "0" in done.stderr
