"""Benchmark commands (`meshlog bench ...`): they print figures; tests never time anything."""

from services.bench.history import synthetic_history
from services.bench.ingest import bench_ingest
from services.bench.rebuild import bench_rebuild

__all__ = ["bench_ingest", "bench_rebuild", "synthetic_history"]
