"""`meshlog xds-certificate`: the gateways' xDS serving certificate and its CA for a fleet an
operator runs, and compose.yaml's use of it (no container engine here: the file is checked,
not run; the same certificate files are served by real gateways in
tests/integration/test_xds_tls.py through `meshlog up --xds-tls`, which shares the code)."""

from __future__ import annotations

import posixpath
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from services.cli.parser import build_parser
from tests.harness import VENV_BIN
from xds_gateway.server.serving_tls import read_key_pair

ROOT = Path(__file__).parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), "xds-certificate", *args],
                          capture_output=True, text=True, timeout=60)


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*names.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in names.get_values_for_type(x509.IPAddress))}


def test_it_makes_a_ca_and_a_serving_pair_a_gateway_takes(tmp_path: Path) -> None:
    out = tmp_path / "xds"
    made = _run("--out", str(out), "--host", "xds-lb", "--host", "10.1.2.3")
    assert made.returncode == 0, made.stderr
    assert f"--tls-cert-file {out / 'tls.crt'}" in made.stdout
    assert f"--ca-cert-file {out / 'ca.crt'}" in made.stdout
    assert _sans(out / "tls.crt") == {"xds-lb", "10.1.2.3", "localhost", "127.0.0.1"}
    for key in ("ca.key", "tls.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600
    read_key_pair(out / "tls.crt", out / "tls.key")  # what `meshlog gateway` checks at start
    # other names later: a new serving certificate from the same CA, which proxies trust
    ca = (out / "ca.crt").read_bytes()
    again = _run("--out", str(out), "--host", "gateway-3")
    assert again.returncode == 0, again.stderr
    assert (out / "ca.crt").read_bytes() == ca
    assert "gateway-3" in _sans(out / "tls.crt")
    issuer = x509.load_pem_x509_certificate(ca).subject
    assert x509.load_pem_x509_certificate((out / "tls.crt").read_bytes()).issuer == issuer


def test_a_bad_host_or_out_is_refused_naming_the_flag(tmp_path: Path) -> None:
    bad = _run("--out", str(tmp_path / "x"), "--host", "two words")
    assert bad.returncode != 0 and "--host: 'two words'" in bad.stderr
    (tmp_path / "file").write_text("")
    not_dir = _run("--out", str(tmp_path / "file"), "--host", "a")
    assert not_dir.returncode != 0 and "--out:" in not_dir.stderr


def _mount(service: dict[str, Any], volume: str) -> tuple[str, bool] | None:
    for spec in service.get("volumes", []):
        source, target, *options = spec.split(":")
        if source == volume:
            return target, options == ["ro"]
    return None


def test_compose_serves_xds_over_tls_with_the_one_shots_certificate() -> None:
    one_shot = SERVICES["xds-certificate"]
    assert one_shot["command"][:2] == ["sh", "-c"]
    make, copy = (shlex.split(step) for step in one_shot["command"][2].split("&&"))
    args = build_parser().parse_args(make[1:])
    assert make[0] == "meshlog" and args.command == "xds-certificate"
    ca_dir = _mount(one_shot, "xds-ca")
    tls_dir = _mount(one_shot, "xds-tls")
    assert ca_dir is not None and tls_dir is not None
    assert posixpath.normpath(args.out) == posixpath.normpath(ca_dir[0])
    assert copy[0] == "cp" and copy[-1].rstrip("/") == tls_dir[0]
    assert sorted(posixpath.basename(f) for f in copy[1:-1]) == ["ca.crt", "tls.crt",
                                                                 "tls.key"]
    gateways = {name: build_parser().parse_args(s["command"][1:])
                for name, s in SERVICES.items()
                if s.get("command", [""])[0] == "meshlog" and s["command"][1] == "gateway"}
    assert gateways
    # the names proxies dial: the balancer's, and each gateway's
    assert {"xds-lb", *gateways} <= set(args.host)
    for name, gateway in gateways.items():
        mounted = _mount(SERVICES[name], "xds-tls")
        assert mounted == (tls_dir[0], True), name  # read-only, and the CA key not there
        assert _mount(SERVICES[name], "xds-ca") is None, name
        for path in (gateway.tls_cert_file, gateway.tls_key_file):
            assert posixpath.dirname(path) == mounted[0], (name, path)
        depends = SERVICES[name]["depends_on"]
        assert depends["xds-certificate"] == {"condition": "service_completed_successfully"}
