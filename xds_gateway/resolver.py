"""`AddressResolver`: resolves the DNS names the view's rows give as addresses (Dataplane
`networking.address` and `advertisedAddress`, ZoneIngress `advertisedAddress`) into the
view's `AddressBook`, as Kuma's control plane does before it sends resources to a proxy
(`pkg/xds/topology` `ResolveDataplaneAddress`: Envoy's EDS takes IPs only).

- A name is looked up when a row brings it, then again every `ttl_s` (Kuma's
  `general.dnsCacheTTL`, 10 s; `meshlog gateway --dns-cache-ttl`), at most `concurrency`
  lookups at a time, each within `timeout_s`.
- The answer is one IP: IPv4 before IPv6, then the lowest, so every gateway picks the same
  from an answer in any order and versions stay equal across gateways (DESIGN.md invariant
  7; Kuma takes the lowest).
- A name that does not exist or has no address has no answer: what uses it stays out of EDS
  (and an inbound listener binds 0.0.0.0). A lookup that times out or fails for a while
  (SERVFAIL, no server reachable) keeps the name's last answer, as Envoy's own DNS clusters
  keep their hosts. A failure is logged with the name and who gives it when it starts and
  every `_LOG_EVERY_S` while it lasts, never every round, and counted
  (`meshlog_xds_address_lookups_total{result}`, `meshlog_xds_unresolved_addresses`).
- A changed answer is a new view generation (`ProjectionView.touch`): streams rebuild what
  depends on it, once per generation and shared, like any change from the bus.

Lookups go through an `AddressLookup`: the system's resolver (`SystemLookup`, getaddrinfo on
threads of its own, so a slow lookup never holds the event loop or its default executor), or
one DNS server (`DnsServerLookup`, `meshlog gateway --dns-server`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import socket
import weakref
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
from prometheus_client import Counter, Gauge

from xds_gateway.view import ProjectionView

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DNS_CACHE_TTL_S",
    "DEFAULT_LOOKUP_TIMEOUT_S",
    "AddressLookup",
    "AddressResolver",
    "DnsServerLookup",
    "LookupFailed",
    "SystemLookup",
    "pick",
]

log = logging.getLogger("meshlog.xds.dns")

DEFAULT_DNS_CACHE_TTL_S = 10.0
"""How long an answer is used before the name is looked up again (Kuma's default)."""
DEFAULT_LOOKUP_TIMEOUT_S = 5.0
DEFAULT_CONCURRENCY = 16
_LOG_EVERY_S = 300.0
"""A name that keeps failing is logged again after this long, not every round."""

LOOKUPS = Counter("meshlog_xds_address_lookups", "Lookups of DNS names given as Dataplane "
                  "and ZoneIngress addresses, by result (resolved, failed, timeout).",
                  ["result"])
_live: weakref.WeakSet[AddressResolver] = weakref.WeakSet()
UNRESOLVED = Gauge("meshlog_xds_unresolved_addresses", "DNS names given as addresses that "
                   "have no answer: the endpoints that use them are left out of EDS.")
UNRESOLVED.set_function(lambda: sum(len(r.unresolved) for r in _live))


class LookupFailed(Exception):
    """A name got no address. `permanent`: it does not exist or has none (NXDOMAIN, no
    A/AAAA record); otherwise it may answer later (timeout, SERVFAIL)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class AddressLookup(Protocol):
    async def addresses(self, name: str) -> list[str]:
        """The IP addresses of `name` (not empty), or `LookupFailed`."""
        ...


_PERMANENT_EAI = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME),
                  getattr(socket, "EAI_ADDRFAMILY", socket.EAI_NONAME)}


class SystemLookup:
    """getaddrinfo (the system's resolver: /etc/hosts, resolv.conf and its search domains)
    on at most `threads` threads of its own: a lookup that hangs holds one of them, never the
    event loop's default executor. Call `close` when done."""

    def __init__(self, threads: int = DEFAULT_CONCURRENCY) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="meshlog-dns")

    async def addresses(self, name: str) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.run_in_executor(
                self._pool, lambda: socket.getaddrinfo(name, None, type=socket.SOCK_STREAM))
        except socket.gaierror as exc:
            raise LookupFailed(str(exc.strerror or exc),
                               permanent=exc.errno in _PERMANENT_EAI) from exc
        except UnicodeError as exc:  # not encodable as IDNA: never resolves
            raise LookupFailed(f"not a valid DNS name ({exc})", permanent=True) from exc
        return [str(info[4][0]) for info in infos]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class DnsServerLookup:
    """A and then AAAA queries to one DNS server (no search domains, no /etc/hosts)."""

    def __init__(self, server: str, port: int = 53,
                 timeout_s: float = DEFAULT_LOOKUP_TIMEOUT_S) -> None:
        self.server = f"{server}:{port}"
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [dns.nameserver.Do53Nameserver(server, port)]
        self._resolver.lifetime = timeout_s

    async def addresses(self, name: str) -> list[str]:
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(name, rdtype, search=False)
            except dns.resolver.NXDOMAIN as exc:
                raise LookupFailed(f"NXDOMAIN from {self.server}", permanent=True) from exc
            except dns.resolver.NoAnswer:
                continue
            except dns.exception.DNSException as exc:  # timeout, SERVFAIL, no server
                raise LookupFailed(f"{type(exc).__name__} from {self.server}: {exc}",
                                   permanent=False) from exc
            return [rdata.address for rdata in answer]
        raise LookupFailed(f"no A or AAAA record at {self.server}", permanent=True)


def pick(addresses: Iterable[str]) -> str | None:
    """The answer among `addresses`: IPv4 before IPv6, then the lowest (None for none)."""
    ips = {ipaddress.ip_address(a.partition("%")[0]) for a in addresses}
    v4 = [ip for ip in ips if ip.version == 4]
    v6 = [ip for ip in ips if ip.version == 6]
    return str(min(v4)) if v4 else str(min(v6)) if v6 else None


class AddressResolver:
    """Keeps `view.addresses` answering the names its rows use (module docstring)."""

    def __init__(self, view: ProjectionView, *, lookup: AddressLookup | None = None,
                 ttl_s: float = DEFAULT_DNS_CACHE_TTL_S,
                 timeout_s: float = DEFAULT_LOOKUP_TIMEOUT_S,
                 concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self._view = view
        self._book = view.addresses
        self._lookup = lookup
        self._ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._concurrency = concurrency
        self._next: dict[str, float] = {}
        """Names in use -> when (loop time) to look each up again."""
        self._failing: dict[str, float] = {}
        """Names whose last lookup failed -> when that was last logged."""
        self.unresolved: set[str] = set()
        """Names in use without an answer (what uses them is left out)."""
        self.settled = asyncio.Event()
        """Set once every name the view held when `run` started has been looked up."""
        _live.add(self)

    async def run(self) -> None:
        """Resolve until cancelled: names as rows bring them, and each again every TTL."""
        own: SystemLookup | None = None
        lookup: AddressLookup
        if self._lookup is None:
            lookup = own = SystemLookup(self._concurrency)
        else:
            lookup = self._lookup
        limit = asyncio.Semaphore(self._concurrency)
        loop = asyncio.get_running_loop()
        changes = self._book.names_changed
        try:
            while True:
                changes.clear()
                in_use = self._book.in_use()
                self._forget([n for n in self._next if n not in in_use])
                now = loop.time()
                due = sorted(n for n in in_use if self._next.setdefault(n, now) <= now)
                if due:
                    await self._round(lookup, limit, {n: in_use[n] for n in due})
                self.unresolved = {n for n in in_use if self._book.ip(n) is None}
                self.settled.set()
                if changes.is_set():
                    continue
                wait = min(self._next.values(), default=math.inf) - loop.time()
                try:
                    async with asyncio.timeout(None if math.isinf(wait) else max(wait, 0)):
                        await changes.wait()
                except TimeoutError:
                    pass  # some names are due
        finally:
            if own is not None:
                own.close()

    async def _round(self, lookup: AddressLookup, limit: asyncio.Semaphore,
                     names: dict[str, frozenset[str]]) -> None:
        """Look `names` up; answers go to the book as they come, those that come together
        in one generation (a slow name does not hold the others back)."""
        async with asyncio.TaskGroup() as tg:
            pending = {tg.create_task(self._resolve(lookup, limit, name, owners)): name
                       for name, owners in names.items()}
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if self._book.update({pending.pop(task): task.result() for task in done}):
                    self._view.touch()

    def _forget(self, names: list[str]) -> None:
        for name in names:
            del self._next[name]
            self._failing.pop(name, None)
        if names:
            self._book.update(dict.fromkeys(names))  # no row uses them: nothing to push

    async def _resolve(self, lookup: AddressLookup, limit: asyncio.Semaphore, name: str,
                       owners: frozenset[str]) -> str | None:
        """The answer for `name` from now on (module docstring: what a failure keeps)."""
        loop = asyncio.get_running_loop()
        last = self._book.ip(name)
        async with limit:
            try:
                async with asyncio.timeout(self.timeout_s):
                    answer = pick(await lookup.addresses(name))
                if answer is None:
                    raise LookupFailed("no address", permanent=True)
            except TimeoutError:
                LOOKUPS.labels("timeout").inc()
                return self._failed(name, owners, f"no answer within {self.timeout_s:g} s",
                                    last, permanent=False)
            except LookupFailed as exc:
                LOOKUPS.labels("failed").inc()
                return self._failed(name, owners, str(exc), last, permanent=exc.permanent)
            finally:
                self._next[name] = loop.time() + self._ttl_s
        LOOKUPS.labels("resolved").inc()
        if self._failing.pop(name, None) is not None:
            log.info("%s resolves again, to %s (the address of %s)", name, answer,
                     _who(owners))
        elif last is not None and last != answer:
            log.info("%s now resolves to %s, was %s (the address of %s)", name, answer, last,
                     _who(owners))
        return answer

    def _failed(self, name: str, owners: frozenset[str], why: str, last: str | None, *,
                permanent: bool) -> str | None:
        keep = None if permanent else last
        now = asyncio.get_running_loop().time()
        logged = self._failing.get(name)
        if logged is None or now - logged >= _LOG_EVERY_S:
            self._failing[name] = now
            outcome = (f"keeping its last answer {keep}" if keep is not None
                       else "its endpoints stay out of EDS")
            log.warning("cannot resolve %s, the address of %s: %s; %s", name, _who(owners),
                        why, outcome)
        return keep


def _who(owners: frozenset[str]) -> str:
    shown = sorted(owners)
    more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
    return ", ".join(shown[:3]) + more

