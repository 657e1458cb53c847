"""`meshlog top`: a live terminal view of a running control plane, read from `/metrics`.

    meshlog top                                  the `meshlog up` of --data-dir (its up.json)
    meshlog top --api http://127.0.0.1:5681      that API's /metrics
    meshlog top --metrics URL [--metrics URL]    any processes' /metrics (gateways, projectors)
    meshlog top --once                           one frame, then exit (scripts)

Every `--interval` seconds it scrapes each endpoint and redraws: xDS streams by protocol, and
by type the subscribed streams, responses, ACKs and NACKs with their rates since the last
scrape and the push latency's p50 and p99 from its histogram buckets; then each endpoint's
projector (leader, last folded sequence, lag), NATS connections and API requests. The
metrics are those the README's Metrics section lists; xDS figures are summed across
endpoints, like `sum` across instances in PromQL.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from services.cli._samples import Scrape, ScrapeError, merged, quantile, scrape
from services.cli.client import api_trust, read_named

if TYPE_CHECKING:  # rich is imported only when a frame is drawn (start-up time)
    from rich.console import RenderableType
    from rich.table import Table

__all__ = ["cmd_top", "endpoints_of", "frame"]

_PROTOCOLS = ("sotw", "delta", "hds")


def endpoints_of(args: argparse.Namespace, default_api: str) -> list[str]:
    """`--metrics` URLs if given; else the API of the `meshlog up` of `--data-dir` when
    `--api` (and $MESHLOG_API) was not given and up.json names one; else `--api`'s
    `/metrics`, or `default_api`'s."""
    if args.metrics:
        return list(args.metrics)
    api: str | None = args.api
    if api is None:
        named = read_named(Path(args.data_dir) / "up.json").get("api")
        api = named if isinstance(named, str) else default_api
    return [api.rstrip("/") + "/metrics"]


def cmd_top(args: argparse.Namespace, default_api: str) -> int:
    try:
        interval = float(args.interval)
    except ValueError:
        interval = 0.0
    if not interval > 0:
        raise SystemExit(f"error: --interval must be a positive number of seconds "
                         f"(got {args.interval!r})")
    urls = endpoints_of(args, default_api)
    # an https API's CA: --ca-cert-file, or the one `meshlog up --api-tls` keeps
    verify = api_trust(urls[0].removesuffix("/metrics"), Path(args.data_dir),
                       args.api_ca_cert_file)
    with httpx.Client(verify=verify) as client:
        try:
            first = [scrape(client, url) for url in urls]
        except ScrapeError as exc:
            raise SystemExit(f"error: {exc}") from None
        if args.once:
            _print_once(frame(first, {}, {}, {}, interval))
            return 0
        try:
            _live(client, urls, first, interval)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a live view ends
    return 0


def _live(client: httpx.Client, urls: list[str], first: list[Scrape], interval: float) -> None:
    from rich.console import Console
    from rich.live import Live

    baseline = {s.url: s for s in first}
    previous: dict[str, Scrape] = {}
    current = dict(baseline)
    errors: dict[str, str] = {}
    with Live(console=Console(), auto_refresh=False, transient=False) as live:
        while True:
            live.update(frame(list(current.values()), previous, baseline, errors, interval),
                        refresh=True)
            time.sleep(interval)
            previous = dict(current)
            for url in urls:
                try:
                    current[url] = scrape(client, url)
                    errors.pop(url, None)
                except ScrapeError as exc:
                    # a process that restarts is shown as down, not the end of the view
                    errors[url] = str(exc)


def _same(before: dict[str, Scrape], now: dict[str, Scrape]) -> Scrape | None:
    """The earlier scrapes of the same endpoints as one, or None if any is missing."""
    if not now or any(url not in before for url in now):
        return None
    return merged(before[url] for url in now)


def _print_once(renderable: RenderableType) -> None:
    """Rendered into a string, then printed: a closed stdout raises BrokenPipeError in
    `print` for `services.cli.main` to handle (as services.cli._tables does)."""
    from rich.console import Console

    tty = sys.stdout.isatty()
    out = io.StringIO()
    Console(file=out, width=None if tty else 160, force_terminal=tty,
            color_system="auto" if tty else None).print(renderable)
    print(out.getvalue(), end="")


def frame(scrapes: list[Scrape], previous: dict[str, Scrape], baseline: dict[str, Scrape],
          errors: dict[str, str], interval: float) -> RenderableType:
    """One screen from the latest scrape of each endpoint. `previous` (the scrapes before,
    by URL) gives rates; `baseline` (top's first scrapes) windows the latencies since top
    started; without them, totals since each process started. `errors`: endpoints down."""
    from rich.console import Group
    from rich.text import Text

    now = merged(scrapes)
    latest = {s.url: s for s in scrapes}
    parts: list[RenderableType] = [Text(
        f"meshlog top  {datetime.now():%H:%M:%S}  every {interval:g}s  "
        f"{len(scrapes)} endpoint(s): {now.url}", style="bold")]
    parts += [Text(error, style="bold red") for error in errors.values()]
    if now.has("meshlog_xds_streams"):
        last = _same(previous, latest)
        parts += [_protocols(now, last), _types(now, last, _same(baseline, latest))]
    if any(s.has("meshlog_projector_last_folded_sequence") for s in scrapes):
        parts.append(_projectors(scrapes))
    if now.has("meshlog_nats_connected"):
        parts.append(_nats(scrapes))
    if now.has("meshlog_read_model_sequence"):  # requests are counted once answered
        parts.append(_api(scrapes, previous))
    return Group(*parts)


def _table(title: str, *columns: str) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=None, header_style="bold")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def _protocols(now: Scrape, previous: Scrape | None) -> Table:
    table = _table("xDS streams by protocol (ADS streams are connected proxies)", "PROTOCOL",
                   "STREAMS", "RESPONSES", "RESP/S", "ACKS", "NACKS", "NACK/S")
    for protocol in _PROTOCOLS:
        table.add_row(protocol, _n(now.value("meshlog_xds_streams", protocol=protocol)),
                      *_counters(now, previous, protocol=protocol))
    return table


def _types(now: Scrape, previous: Scrape | None, baseline: Scrape | None) -> Table:
    window = "since the processes started"
    if baseline is not None and now.value("meshlog_xds_push_latency_seconds_count") > \
            baseline.value("meshlog_xds_push_latency_seconds_count"):
        window = "since top started"
    else:
        baseline = None
    table = _table(f"xDS by type (push latency {window})", "TYPE", "SUBSCRIBED", "RESPONSES",
                   "RESP/S", "ACKS", "NACKS", "NACK/S", "PUSH P50", "PUSH P99")
    types = {k[0] for k in now.by("meshlog_xds_responses_total", "type_url")}
    types |= {k[0] for k in now.by("meshlog_xds_subscribed_streams", "type_url")}
    for type_url in sorted(types):
        buckets = now.buckets("meshlog_xds_push_latency_seconds", type_url=type_url)
        if baseline is not None:
            before = dict(baseline.buckets("meshlog_xds_push_latency_seconds",
                                           type_url=type_url))
            buckets = [(le, count - before.get(le, 0.0)) for le, count in buckets]
        table.add_row(type_url.rpartition(".")[2] or type_url,
                      _n(now.value("meshlog_xds_subscribed_streams", type_url=type_url)),
                      *_counters(now, previous, type_url=type_url),
                      _ms(quantile(0.5, buckets)), _ms(quantile(0.99, buckets)))
    return table


def _counters(now: Scrape, previous: Scrape | None, **labels: str) -> list[str]:
    responses = now.value("meshlog_xds_responses_total", **labels)
    return [_n(responses), _rate(now, previous, "meshlog_xds_responses_total", **labels),
            _n(now.value("meshlog_xds_acks_total", **labels)),
            _n(now.value("meshlog_xds_nacks_total", **labels)),
            _rate(now, previous, "meshlog_xds_nacks_total", **labels)]


def _projectors(scrapes: list[Scrape]) -> Table:
    table = _table("projector", "ENDPOINT", "PROJECTOR", "LEADER", "LAST SEQ", "LAG EVENTS",
                   "LAG SECONDS", "FENCING TOKEN")
    for one in scrapes:
        for (projector,), seq in sorted(one.by("meshlog_projector_last_folded_sequence",
                                               "projector").items()):
            table.add_row(_host(one.url), projector, _leader(one, projector),
                          _n(seq), _n(one.value("meshlog_projector_lag_events",
                                                projector=projector)),
                          f"{one.value('meshlog_projector_lag_seconds', projector=projector):.1f}",
                          _n(one.value("meshlog_projector_fencing_token",
                                       projector=projector)))
    return table


def _leader(one: Scrape, projector: str) -> str:
    """`meshlog_projector_leader` is absent without a lease: the only projector folds."""
    leads = one.by("meshlog_projector_leader", "projector").get((projector,))
    return "no lease" if leads is None else "yes" if leads > 0 else "standby"


def _nats(scrapes: list[Scrape]) -> Table:
    table = _table("NATS", "ENDPOINT", "CONNECTION", "CONNECTED", "RECONNECTS")
    for one in scrapes:
        for (connection,), up in sorted(one.by("meshlog_nats_connected", "connection").items()):
            table.add_row(_host(one.url), connection, "yes" if up else "NO",
                          _n(one.value("meshlog_nats_reconnects_total", connection=connection)))
    return table


def _api(scrapes: list[Scrape], previous: dict[str, Scrape]) -> Table:
    table = _table("API", "ENDPOINT", "REQUESTS", "REQ/S", "5XX", "READ MODEL SEQ")
    for one in scrapes:
        if not one.has("meshlog_read_model_sequence"):
            continue
        errors = sum(v for (status,), v in one.by("meshlog_api_requests_total",
                                                  "status").items() if status.startswith("5"))
        table.add_row(_host(one.url), _n(one.value("meshlog_api_requests_total")),
                      _rate(one, previous.get(one.url), "meshlog_api_requests_total"),
                      _n(errors), _n(one.value("meshlog_read_model_sequence")))
    return table


def _rate(now: Scrape, previous: Scrape | None, name: str, **labels: str) -> str:
    """Per second between two scrapes; a counter that went down restarted from 0."""
    if previous is None or now.at <= previous.at:
        return "-"
    current, before = now.value(name, **labels), previous.value(name, **labels)
    increase = current - before if current >= before else current
    return f"{increase / (now.at - previous.at):.1f}"


def _n(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.2f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _host(url: str) -> str:
    return httpx.URL(url).netloc.decode()
