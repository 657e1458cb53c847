"""compose.yaml serves the API over HTTPS as it serves xDS over TLS: the one-shot
`api-certificate` runs `meshlog api-certificate` (a CA kept in a volume no API mounts) and
copies the serving pair where the API replicas read it, read-only; Prometheus scrapes their
/metrics over HTTPS trusting that CA, and sees no key. No container engine here: the file is
checked, not run; the command the one-shot runs is run here, and real APIs serve its kind of
files in tests/integration/test_api_tls.py."""

from __future__ import annotations

import argparse
import posixpath
import subprocess
from pathlib import Path

import yaml
from cryptography import x509

from services.cli.parser import build_parser
from services.runtime.api_tls import API_TLS_FLAGS
from tests.harness import VENV_BIN
from tests.services.test_compose_nats_users import (
    COMPOSE,
    ROOT,
    SERVICES,
    mounts,
    one_shot_args,
    one_shot_steps,
)
from xds_gateway.server.serving_tls import read_key_pair

ONE_SHOT = "api-certificate"


def _steps() -> list[list[str]]:
    return one_shot_steps(ONE_SHOT)


def _one_shot_args() -> argparse.Namespace:
    return one_shot_args(ONE_SHOT)


def _apis() -> dict[str, argparse.Namespace]:
    found = {}
    for name, service in SERVICES.items():
        command = service.get("command")
        if isinstance(command, list) and command[:2] == ["meshlog", "api"]:
            found[name] = build_parser().parse_args(command[1:])
    assert found
    return found


def test_the_one_shot_makes_the_ca_and_copies_the_pair_and_the_ca() -> None:
    args = _one_shot_args()
    assert args.command == "api-certificate"
    where = mounts(SERVICES[ONE_SHOT])
    assert posixpath.normpath(args.out) == where["api-ca"][0]
    _make, to_apis, to_trust = _steps()
    assert to_apis[0] == "cp" and to_apis[-1].rstrip("/") == where["api-tls"][0]
    assert sorted(posixpath.basename(f) for f in to_apis[1:-1]) == ["ca.crt", "tls.crt",
                                                                   "tls.key"]
    assert to_trust == ["cp", posixpath.join(args.out, "ca.crt"),
                        where["api-trust"][0] + "/"]


def test_each_api_serves_https_with_the_one_shots_pair_read_only() -> None:
    hosts = set(_one_shot_args().host)
    for name, args in _apis().items():
        assert name in hosts, name  # the name Prometheus (and the other services) dial
        where = mounts(SERVICES[name])
        assert where["api-tls"][1], name  # read-only
        assert "api-ca" not in where and "api-trust" not in where, name  # no CA key here
        for path in (args.api_tls_cert_file, args.api_tls_key_file):
            assert posixpath.dirname(path) == where["api-tls"][0], (name, path)
        assert SERVICES[name]["depends_on"][ONE_SHOT] == {
            "condition": "service_completed_successfully"}


def test_prometheus_scrapes_the_apis_over_https_trusting_only_the_ca() -> None:
    config = yaml.safe_load((ROOT / "docs/prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "meshlog-api"]
    assert job["scheme"] == "https"
    assert {t.partition(":")[0] for c in job["static_configs"] for t in c["targets"]} == set(
        _apis())
    where = mounts(SERVICES["prometheus"])
    assert posixpath.dirname(job["tls_config"]["ca_file"]) == where["api-trust"][0]
    assert where["api-trust"][1]
    assert "api-tls" not in where and "api-ca" not in where  # no key
    assert set(where) <= set(COMPOSE["volumes"])


def test_the_one_shots_command_makes_a_pair_the_api_takes(tmp_path: Path) -> None:
    args = _one_shot_args()
    out = tmp_path / "api-ca"
    made = subprocess.run([str(VENV_BIN / "meshlog"), "api-certificate", "--out", str(out),
                           *(f"--host={h}" for h in args.host)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert f"--api-tls-cert-file {out / 'tls.crt'}" in made.stdout
    assert f"--ca-cert-file {out / 'ca.crt'}" in made.stdout
    # what `meshlog api` checks at start
    read_key_pair(out / "tls.crt", out / "tls.key", flags=API_TLS_FLAGS)
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {*sans.get_values_for_type(x509.DNSName),
             *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))}
    # the replicas by name, and the host's published port (127.0.0.1:5681)
    assert {*args.host, "127.0.0.1", "localhost"} <= names

