"""MeshRetry's rules (`events.validation` calls them; its helpers are shared): targetRefs as
MeshTimeout's, attempt counts in range, back-off intervals above 0, `perTryTimeout` not
negative (`0s` disables it, as Kuma's API says), `retryOn` values from Kuma's enums.
Stricter than Kuma's validator, which checks neither the durations' sign, nor
`maxInterval` against `baseInterval`, nor the intervals above 0 (Envoy refuses negative
durations, intervals of 0 and a `maxInterval` below `baseInterval`); an HTTP status code
is any number from 100 to 599 (Kuma: one Go's `http.StatusText` knows)."""

from __future__ import annotations

from events.errors import Violation
from events.resources import (
    GRPC_RETRY_ON,
    HTTP_RETRY_ON,
    KUMA_GRPC_RETRY_ON,
    KUMA_RETRY_ON,
    MeshRetry,
    MeshRetryBackOff,
    MeshRetryConf,
    go_duration_ns,
)
from events.validation import _TO_KINDS, _TOP_KINDS, _go_duration, _target_ref

__all__ = ["mesh_retry"]

_MAX_UINT32 = 2**32 - 1


def mesh_retry(mr: MeshRetry, out: list[Violation]) -> None:
    """Kuma's rules (`meshretry/api/v1alpha1/validator.go`): the top-level targetRef's kinds,
    `to[]` names Mesh or a MeshService and is not empty; each `default` sets at least one of
    `tcp`, `http`, `grpc`; durations not negative, back-off intervals above 0; attempt
    counts in range; `retryOn` values from Kuma's enums (an HTTP status code as a string
    among HTTP's)."""
    _target_ref(mr.spec.target_ref, "spec.targetRef", _TOP_KINDS, out)
    if not mr.spec.to:
        out.append(Violation("spec.to", "[] must list at least one entry"))
    for i, to in enumerate(mr.spec.to):
        path = f"spec.to[{i}]"
        _target_ref(to.target_ref, f"{path}.targetRef", _TO_KINDS, out)
        _retry_conf(to.default, f"{path}.default", out)


def _retry_conf(conf: MeshRetryConf, path: str, out: list[Violation]) -> None:
    if conf.tcp is None and conf.http is None and conf.grpc is None:
        out.append(Violation(path, "at least one of 'tcp', 'http', 'grpc' has to be defined"))
        return
    if conf.tcp is not None:
        attempts = conf.tcp.max_connect_attempt
        if attempts is None:
            out.append(Violation(f"{path}.tcp", "maxConnectAttempt has to be defined"))
        elif not 1 <= attempts <= _MAX_UINT32:
            out.append(Violation(f"{path}.tcp.maxConnectAttempt",
                                 f"{attempts} must be between 1 and {_MAX_UINT32}"))
    for name, section, allowed in (("http", conf.http, (*HTTP_RETRY_ON, *KUMA_RETRY_ON)),
                                   ("grpc", conf.grpc, (*GRPC_RETRY_ON, *KUMA_GRPC_RETRY_ON))):
        if section is None:
            continue
        where = f"{path}.{name}"
        if (section.num_retries is None and section.per_try_timeout is None
                and section.back_off is None and section.retry_on is None):
            out.append(Violation(where, "at least one of numRetries, perTryTimeout, backOff, "
                                 "retryOn has to be defined"))
        if section.num_retries is not None and not 0 <= section.num_retries <= _MAX_UINT32:
            out.append(Violation(f"{where}.numRetries", f"{section.num_retries} must be "
                                 f"between 0 and {_MAX_UINT32}"))
        _go_duration(section.per_try_timeout, f"{where}.perTryTimeout", out)
        _back_off(section.back_off, f"{where}.backOff", out)
        for j, value in enumerate(section.retry_on or []):
            if value in allowed or (name == "http" and _status_code(value)):
                continue
            codes = " or an HTTP status code as a string (e.g. '503')" if name == "http" else ""
            out.append(Violation(f"{where}.retryOn[{j}]", f"{value!r} is not one of "
                                 f"{', '.join(allowed)}{codes}"))


def _back_off(back_off: MeshRetryBackOff | None, path: str, out: list[Violation]) -> None:
    if back_off is None:
        return
    if back_off.base_interval is None and back_off.max_interval is None:
        out.append(Violation(path, "at least one of baseInterval, maxInterval has to be "
                             "defined"))
    _go_duration(back_off.base_interval, f"{path}.baseInterval", out, positive=True)
    _go_duration(back_off.max_interval, f"{path}.maxInterval", out, positive=True)
    base = go_duration_ns(back_off.base_interval or "")
    top = go_duration_ns(back_off.max_interval or "")
    if base is not None and top is not None and 0 < top < base:
        out.append(Violation(f"{path}.maxInterval", f"{back_off.max_interval!r} must not be "
                             f"less than baseInterval {back_off.base_interval!r}"))


def _status_code(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) == 3 and 100 <= int(value) <= 599
