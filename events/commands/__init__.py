"""The command side: every write to the log goes through `CommandHandler` (read the subject's
last record, decide, append with optimistic concurrency and a decision's Msg-Id)."""

from events.commands.ca import CaCommands, NoSecretKey
from events.commands.clock import ClockCommands
from events.commands.handler import (
    Append,
    CommandHandler,
    Current,
    Decide,
    Decision,
    Keep,
    Outcome,
    current_of,
    timeless,
)
from events.commands.proxies import (
    Deregistered,
    ProbeTarget,
    ProxyCommands,
    probe_target,
    registration_of,
    with_readiness,
)
from events.commands.resources import Commands, Deployment, WriteResult, live_resource
from events.commands.skips import SkipCommands, Skipped, unfoldable
from events.commands.tokens import OpenedKey, Rotated, TokenCommands, signs_here

__all__ = [
    "Append",
    "CaCommands",
    "ClockCommands",
    "CommandHandler",
    "Commands",
    "Current",
    "Decide",
    "Decision",
    "Deployment",
    "Deregistered",
    "Keep",
    "NoSecretKey",
    "OpenedKey",
    "Outcome",
    "ProbeTarget",
    "ProxyCommands",
    "Rotated",
    "SkipCommands",
    "Skipped",
    "TokenCommands",
    "WriteResult",
    "current_of",
    "live_resource",
    "probe_target",
    "registration_of",
    "signs_here",
    "timeless",
    "unfoldable",
    "with_readiness",
]
