"""`meshlog xds-certificate`: the xDS serving certificate of gateways an operator runs (a
fleet behind a load balancer, `compose.yaml`), as `meshlog up --xds-tls` makes its own.

    meshlog xds-certificate --out DIR --host NAME [--host NAME ...]

It makes (or keeps) a CA in DIR and issues the gateways' serving certificate from it for the
names proxies dial (the balancer's, each gateway's, and always localhost and 127.0.0.1):
DIR/ca.crt (`meshlog dataplane bootstrap --ca-cert-file`), DIR/tls.crt and DIR/tls.key
(`meshlog gateway --tls-cert-file --tls-key-file`). Run again with other names, it issues the
serving certificate again from the same CA: proxies that trust ca.crt do not notice
(services.runtime.xds_certificate).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.errors import ConfigError
from services.runtime.xds_certificate import ensure_xds_certificate_in

__all__ = ["add_xds_certificate_parser", "cmd_xds_certificate"]

_LOOPBACK = ("localhost", "127.0.0.1")


def add_xds_certificate_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """The `xds-certificate` command, on the CLI's subparsers."""
    cert = sub.add_parser("xds-certificate", parents=parents,
                          help="make the xDS serving certificate (and its CA) of gateways you "
                               "run, for --tls-cert-file/--tls-key-file")
    cert.add_argument("--out", required=True, metavar="DIR",
                      help="where ca.crt, ca.key, tls.crt and tls.key go (made 0700; keys "
                           "0600); a CA already there is kept")
    cert.add_argument("--host", action="append", default=[], metavar="NAME",
                      help="a DNS name or IP address proxies dial to reach the gateways (the "
                           "balancer's, each gateway's); repeat it; localhost and 127.0.0.1 "
                           "are always in")


def cmd_xds_certificate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {str(out)!r} is not a directory")
    hosts = [h.strip() for h in args.host]
    bad = [h for h in hosts if not h or any(c.isspace() for c in h) or "/" in h]
    if bad:
        raise ConfigError(f"--host: {bad[0]!r} is not a DNS name or an IP address")
    names = list(dict.fromkeys([*hosts, *_LOOPBACK]))
    paths = ensure_xds_certificate_in(out, names)
    print(f"xDS TLS for {', '.join(names)}:")
    print(f"  gateways: meshlog gateway --tls-cert-file {paths.cert_file} "
          f"--tls-key-file {paths.key_file}")
    print(f"  proxies:  meshlog dataplane bootstrap --ca-cert-file {paths.ca_file} ...")
    print(f"  keep {out / 'ca.key'} as you keep a CA key: it issues what proxies trust")
    return 0
