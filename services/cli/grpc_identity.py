"""`meshlog grpc-identity`: the mesh identity of a proxyless gRPC client, kept in files its
bootstrap's `file_watcher` certificate provider reads (services.runtime.grpc_identity).

    meshlog grpc-identity --mesh M --name N --out DIR [--token-file F]
                          [--bootstrap-file B] [--xds-address H:P] [--ca-cert-file CA]
    meshlog grpc-identity ... --once            write the files once, then exit
    meshlog grpc-identity ... --print-bootstrap print the gRPC bootstrap JSON, then exit

The client then runs with GRPC_XDS_BOOTSTRAP=B and `grpc.xds_channel_credentials()`.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from typing import Any

from services.errors import ConfigError

__all__ = ["add_grpc_identity_parser", "cmd_grpc_identity"]


def add_grpc_identity_parser(sub: Any, parents: list[argparse.ArgumentParser],
                             env: Any) -> None:
    p = sub.add_parser("grpc-identity", parents=parents,
                       help="keep a proxyless gRPC client's mesh certificate in files (and "
                            "write its xDS bootstrap)")
    p.add_argument("--mesh", help="the client's Dataplane's mesh (default: the token's, "
                                  "else default)")
    p.add_argument("--name", help="the client's Dataplane's name (default: the token's)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="where cert.pem, key.pem (0600) and ca.pem are kept")
    p.add_argument("--token-file", default=env("DATAPLANE_TOKEN_FILE"),
                   help="the Dataplane's token (meshlog generate dataplane-token), sent on the "
                        "agent's xDS stream and named in the bootstrap (env "
                        "MESHLOG_DATAPLANE_TOKEN_FILE)")
    p.add_argument("--xds-address", default=env("XDS_ADDRESS", "127.0.0.1:5678"),
                   help="gateway (or load balancer) host:port (default %(default)s)")
    p.add_argument("--ca-cert-file", default=env("CONTROL_PLANE_CA_CERT_FILE"),
                   metavar="FILE",
                   help="the gateway serves TLS: trust this PEM CA for it (env "
                        "MESHLOG_CONTROL_PLANE_CA_CERT_FILE; default: plaintext)")
    p.add_argument("--bootstrap-file", metavar="FILE",
                   help="also write the client's gRPC xDS bootstrap here (GRPC_XDS_BOOTSTRAP)")
    p.add_argument("--refresh-interval", default="10s",
                   help="how often gRPC rereads the files (bootstrap's file_watcher "
                        "refresh_interval, default %(default)s)")
    p.add_argument("--print-bootstrap", action="store_true",
                   help="print the bootstrap JSON and exit (no connection)")
    p.add_argument("--once", action="store_true",
                   help="exit after the files are first written")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="with --once: give up after this long (default %(default)s)")


def cmd_grpc_identity(args: argparse.Namespace) -> int:
    from services.cli.bootstrap import read_ca_cert_file
    from services.cli.bootstrap_command import token_file_holder
    from services.runtime.grpc_identity import (
        IdentityFiles,
        IdentityOptions,
        grpc_bootstrap,
        run_identity_agent,
        write_atomically,
    )

    mesh, name, token = args.mesh, args.name, None
    if args.token_file:
        token, (mesh, name) = token_file_holder(args.token_file, mesh, name)
    if not name:
        raise ConfigError("--name is required (or a --token-file that names its Dataplane)")
    mesh = mesh or "default"
    if not args.refresh_interval.endswith("s") or not _seconds(args.refresh_interval):
        raise ConfigError(f"--refresh-interval: {args.refresh_interval!r} is not a duration "
                          "in seconds such as 10s")
    if args.token_file and not args.ca_cert_file and (args.bootstrap_file
                                                       or args.print_bootstrap):
        # gRPC sends call credentials over a secure channel only: its xDS stream would fail
        raise ConfigError("--token-file needs --ca-cert-file for the gRPC bootstrap: gRPC "
                          "sends the token (call credentials, gRFC A97) over TLS only")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {str(out)!r} is not a directory")
    options = IdentityOptions(
        mesh=mesh, name=name, xds_address=args.xds_address,
        files=IdentityFiles.in_dir(out.absolute()), token=token,
        ca_cert=read_ca_cert_file(args.ca_cert_file) if args.ca_cert_file else None)
    bootstrap = grpc_bootstrap(
        options, refresh_interval=args.refresh_interval,
        token_file=str(Path(args.token_file).absolute()) if args.token_file else None)
    text = json.dumps(bootstrap, indent=2) + "\n"
    if args.print_bootstrap:
        print(text, end="")
        return 0
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create it "
                          f"({exc.strerror or type(exc).__name__})") from None
    if args.bootstrap_file:
        try:
            write_atomically(Path(args.bootstrap_file), text.encode())
        except OSError as exc:
            raise ConfigError(f"--bootstrap-file {args.bootstrap_file}: cannot write it "
                              f"({exc.strerror or type(exc).__name__})") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_identity_agent(options, once=args.once, stop=stop,
                       timeout=args.timeout if args.once else None)
    return 0


def _seconds(value: str) -> bool:
    try:
        return float(value[:-1]) > 0
    except ValueError:
        return False
