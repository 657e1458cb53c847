"""`meshlog inspect dataplane` of real Envoy sidecars with mTLS (SDS over ADS): a healthy
proxy that applied every response shows as many ACKs as responses per type, also after
config changes, and the Secret type by its short name (`sds`). The mesh of test_mtls."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from services.cli.main import main
from tests.harness import fetch, free_port, wait_for
from tests.integration.test_mtls import allow, dataplane, mesh, running_mesh

pytestmark = pytest.mark.integration

_COLUMNS = ("TYPE", "SENT", "ACKED", "NACKED")


def _counters(api: str, name: str, capsys: pytest.CaptureFixture[str]
              ) -> dict[str, tuple[int, int, int]]:
    """The inspect table's rows: type -> (sent, acked, nacked)."""
    assert main(["--api", api, "inspect", "dataplane", name]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == list(_COLUMNS))
    rows = {}
    for line in lines[header + 1:]:
        cells = line.split()
        if len(cells) >= 4:
            rows[cells[0]] = (int(cells[1]), int(cells[2]), int(cells[3]))
    return rows


def _all_acked(api: str, name: str, types: set[str], capsys: pytest.CaptureFixture[str]
               ) -> dict[str, tuple[int, int, int]] | None:
    rows = _counters(api, name, capsys)
    settled = all(sent == acked and nacked == 0 for sent, acked, nacked in rows.values())
    return rows if settled and rows.keys() == {*types, "total"} else None


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_inspect_shows_every_response_acked_after_config_changes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], delta: bool) -> None:
    with running_mesh(tmp_path, mesh("STRICT"), delta=delta) as m:
        api = m.cp.where["api"]
        m.cp.apply(dataplane("other-1", "127.0.0.5", free_port("127.0.0.5"), "other"))
        m.cp.apply(allow("web-to-backend", "web"))
        vip = m.cp.meshservice("other")["status"]["vips"][0]["ip"]
        wait_for(lambda: any(name.startswith(f"outbound:{vip}:") for name in m.web.listeners()),
                 timeout=30, what="web's outbound listener to other's VIP")
        assert wait_for(lambda: fetch(m.url), timeout=30,
                        what="web -> backend once allowed (backend's new RBAC)") == "backend-app"
        # every type's rows: exactly these (backend reaches nothing: no EDS)
        for name, types in (("web-1", {"cds", "eds", "lds", "sds"}),
                            ("backend-1", {"cds", "lds", "sds"})):
            try:
                rows = wait_for(partial(_all_acked, api, name, types, capsys), timeout=30,
                                what=f"{name}: as many ACKs as responses, per type")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; inspect shows {_counters(api, name, capsys)}"
                                     ) from None
            # the types by their short names only (no type URL row), and a total that adds up
            assert rows["total"][0] == sum(
                sent for kind, (sent, _, _) in rows.items() if kind != "total")
