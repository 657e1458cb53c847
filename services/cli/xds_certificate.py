"""`meshlog xds-certificate`: the xDS serving certificate of gateways an operator runs (a
fleet behind a load balancer, `compose.yaml`), as `meshlog up --xds-tls` makes its own; and
`meshlog api-certificate`, the same for API replicas (as `meshlog up --api-tls` makes its own).

    meshlog xds-certificate --out DIR --host NAME [--host NAME ...]
    meshlog api-certificate --out DIR --host NAME [--host NAME ...]

It makes (or keeps) a CA in DIR and issues the gateways' serving certificate from it for the
names proxies dial (the balancer's, each gateway's, and always localhost and 127.0.0.1):
DIR/ca.crt (`meshlog dataplane bootstrap --ca-cert-file`), DIR/tls.crt and DIR/tls.key
(`meshlog gateway --tls-cert-file --tls-key-file`). Run again with other names, it issues the
serving certificate again from the same CA: proxies that trust ca.crt do not notice
(services.runtime.xds_certificate). `api-certificate` writes the same files, for `meshlog api
--api-tls-cert-file --api-tls-key-file`; CLI users trust its ca.crt (`meshlog --ca-cert-file`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.errors import ConfigError
from services.runtime.xds_certificate import XDS, ensure_xds_certificate_in

__all__ = ["add_xds_certificate_parser", "cmd_xds_certificate"]

_LOOPBACK = ("localhost", "127.0.0.1")


def add_xds_certificate_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """The `xds-certificate` and `api-certificate` commands, on the CLI's subparsers."""
    for command, serves, flags, dialers in (
            ("xds-certificate", "xDS serving certificate (and its CA) of gateways",
             "--tls-cert-file/--tls-key-file", "proxies dial to reach the gateways (the "
             "balancer's, each gateway's)"),
            ("api-certificate", "API serving certificate (and its CA) of API replicas",
             "--api-tls-cert-file/--api-tls-key-file", "clients dial to reach the API (each "
             "replica's, a balancer's)")):
        cert = sub.add_parser(command, parents=parents,
                              help=f"make the {serves} you run, for {flags}")
        cert.add_argument("--out", required=True, metavar="DIR",
                          help="where ca.crt, ca.key, tls.crt and tls.key go (made 0700; keys "
                               "0600); a CA already there is kept")
        cert.add_argument("--host", action="append", default=[], metavar="NAME",
                          help=f"a DNS name or IP address {dialers}; repeat it; localhost "
                               f"and 127.0.0.1 are always in")


def cmd_xds_certificate(args: argparse.Namespace) -> int:
    """`meshlog xds-certificate` and `meshlog api-certificate`."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {str(out)!r} is not a directory")
    hosts = [h.strip() for h in args.host]
    bad = [h for h in hosts if not h or any(c.isspace() for c in h) or "/" in h]
    if bad:
        raise ConfigError(f"--host: {bad[0]!r} is not a DNS name or an IP address")
    names = list(dict.fromkeys([*hosts, *_LOOPBACK]))
    api = args.command == "api-certificate"
    # here, not at the top: the parser imports this module, and api_tls pulls in grpcio
    from services.runtime.api_tls import API_TLS

    paths = ensure_xds_certificate_in(out, names, purpose=API_TLS if api else XDS)
    if api:
        print(f"API TLS for {', '.join(names)}:")
        print(f"  APIs:     meshlog api --api-tls-cert-file {paths.cert_file} "
              f"--api-tls-key-file {paths.key_file}")
        print(f"  clients:  meshlog --ca-cert-file {paths.ca_file} --api https://NAME:5681 ...")
        print(f"  keep {out / 'ca.key'} as you keep a CA key: it issues what clients trust")
        return 0
    print(f"xDS TLS for {', '.join(names)}:")
    print(f"  gateways: meshlog gateway --tls-cert-file {paths.cert_file} "
          f"--tls-key-file {paths.key_file}")
    print(f"  proxies:  meshlog dataplane bootstrap --ca-cert-file {paths.ca_file} ...")
    print(f"  keep {out / 'ca.key'} as you keep a CA key: it issues what proxies trust")
    return 0
