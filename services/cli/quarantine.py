"""`meshlog quarantine`: the events the projector could not decode or apply, and the escape
hatch for one that no release can read.

    meshlog quarantine [list]                       the quarantined events (exit 1 if any) and
                                                    those skipped by decision
    meshlog quarantine skip --seq N --reason TEXT   fold the event at N as nothing (admin)

A skip appends an operator's decision to the log (who, when, why: `SequenceSkipped`), once per
sequence; the API refuses it for an event that folds. The halted projector notices it by
itself and goes on; a replay made afterwards skips the event too.
"""

from __future__ import annotations

import argparse
from typing import Any

from events import rfc3339
from services.cli.client import ApiClient
from services.errors import ConfigError
from services.runtime.config import parse_positive

__all__ = ["add_quarantine_parsers", "cmd_quarantine"]


def add_quarantine_parsers(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """The `quarantine` command, on the CLI's subparsers."""
    quarantine = sub.add_parser("quarantine", parents=parents, help="list events the "
                                "projector could not apply (exit 1 if any); skip one (admin)")
    actions = quarantine.add_subparsers(dest="quarantine_action", metavar="ACTION")
    actions.add_parser("list", parents=parents, help="the quarantined events and those "
                       "skipped (the default; exit 1 if any is quarantined)")
    skip = actions.add_parser("skip", parents=parents, help="fold an event no release can "
                              "read as nothing (admin): the decision is appended to the log "
                              "and the halted projector resumes by itself")
    skip.add_argument("--seq", required=True, help="the stream sequence of the quarantined "
                      "event (meshlog quarantine)")
    skip.add_argument("--reason", required=True, help="why, kept in the log with who decided "
                      "and when")


def cmd_quarantine(args: argparse.Namespace, client: ApiClient) -> int:
    if args.quarantine_action == "skip":
        return _skip(args, client)
    listing = client.get("/_quarantine")
    for item in listing.get("skipped", []):
        print(f"skipped #{item['seq']} {item['subject']}: by {item['by']} at "
              f"{rfc3339(item['decidedAt'])} (decision #{item['decisionSeq']}): "
              f"{item['reason']}")
    items = listing["items"]
    if not items:
        print("no quarantined events")
        return 0
    for item in items:
        print(f"#{item['seq']} {item['subject']} (projector {item['projector']}): "
              f"{item['reason']}")
    print("# upgrade meshlog (or add an upcaster) and restart; if no release can read it: "
          f"meshlog quarantine skip --seq {items[0]['seq']} --reason TEXT")
    return 1


def _skip(args: argparse.Namespace, client: ApiClient) -> int:
    seq = parse_positive("--seq", args.seq)
    if not args.reason.strip():
        raise ConfigError("--reason: say why the event is skipped (it is kept in the log)")
    result = client.request("POST", "/_quarantine/skips",
                            json={"seq": seq, "reason": args.reason})
    if result["unchanged"]:
        print(f"sequence {seq} ({result['subject']}) was already skipped (decision "
              f"#{result['version']})")
    else:
        print(f"sequence {seq} ({result['subject']}) skipped (decision #{result['version']}): "
              "the projector folds it as nothing and goes on")
    return 0
