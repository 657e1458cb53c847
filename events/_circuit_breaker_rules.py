"""MeshCircuitBreaker's rules (`events.policy_kinds` declares them; `events.validation`'s
helpers are shared), after Kuma's `meshcircuitbreaker/api/v1alpha1/validator.go`: targetRefs
as MeshTimeout's, `to[]` not empty, each `default` sets `connectionLimits` or
`outlierDetection`; limits, consecutive counts, minimum hosts and request volumes above 0;
percentages 0 to 100; durations above 0; `outlierDetection` names its `detectors`, at least
one; `standardDeviationFactor` a number above 0. Stricter than Kuma's only where the value
must fit Envoy's uint32."""

from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation

from events.errors import Violation
from events.resources import (
    CircuitBreakerConnectionLimits,
    CircuitBreakerDetectors,
    CircuitBreakerOutlierDetection,
    MeshCircuitBreaker,
    MeshCircuitBreakerConf,
)
from events.validation import _TO_KINDS, _TOP_KINDS, _go_duration, _target_ref

__all__ = ["mesh_circuit_breaker", "stdev_factor_milli"]

_MAX_UINT32 = 2**32 - 1
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[])
"""Arithmetic without rounding or raising: the default context's 28 digits round a long
factor up (Kuma's decimal truncates it) and its exponent limit raises `decimal.Overflow`."""
_PAST_UINT32 = Decimal(2**32)
_DETECTORS = ("totalFailures", "gatewayFailures", "localOriginFailures", "successRate",
              "failurePercentage")


def mesh_circuit_breaker(mcb: MeshCircuitBreaker, out: list[Violation]) -> None:
    _target_ref(mcb.spec.target_ref, "spec.targetRef", _TOP_KINDS, out)
    if not mcb.spec.to:
        out.append(Violation("spec.to", "[] must list at least one entry (inbound 'rules' "
                             "are not modelled)"))
    for i, to in enumerate(mcb.spec.to):
        path = f"spec.to[{i}]"
        _target_ref(to.target_ref, f"{path}.targetRef", _TO_KINDS, out)
        _conf(to.default, f"{path}.default", out)


def stdev_factor_milli(value: int | str) -> int | None:
    """`successRate.standardDeviationFactor` as Envoy's `success_rate_stdev_factor` (the
    factor times 1000, truncated as Kuma's decimal's `IntPart`); None: not a number. A value
    past the uint32 is clamped just past it (or to -1), so validation names it."""
    try:
        factor = Decimal(value) if isinstance(value, int) else Decimal(value.strip())
    except InvalidOperation:
        return None
    if not factor.is_finite():
        return None
    milli = factor.scaleb(3, context=_EXACT)  # exact: only the exponent moves
    if milli.copy_abs() >= _PAST_UINT32:
        # past Envoy's uint32 either way: no int of a huge power of ten ('1e999999999')
        return _MAX_UINT32 + 1 if milli > 0 else -1
    return int(milli)  # truncated toward 0


def _conf(conf: MeshCircuitBreakerConf, path: str, out: list[Violation]) -> None:
    if conf.connection_limits is None and conf.outlier_detection is None:
        out.append(Violation(path, "at least one of 'connectionLimits' or 'outlierDetection' "
                             "has to be defined"))
        return
    _limits(conf.connection_limits, f"{path}.connectionLimits", out)
    _outlier(conf.outlier_detection, f"{path}.outlierDetection", out)


def _limits(limits: CircuitBreakerConnectionLimits | None, path: str,
            out: list[Violation]) -> None:
    if limits is None:
        return
    for name, value in (("maxConnections", limits.max_connections),
                        ("maxConnectionPools", limits.max_connection_pools),
                        ("maxPendingRequests", limits.max_pending_requests),
                        ("maxRetries", limits.max_retries),
                        ("maxRequests", limits.max_requests)):
        _above_zero(value, f"{path}.{name}", out)


def _outlier(od: CircuitBreakerOutlierDetection | None, path: str,
             out: list[Violation]) -> None:
    if od is None:
        return
    _go_duration(od.interval, f"{path}.interval", out, positive=True)
    _go_duration(od.base_ejection_time, f"{path}.baseEjectionTime", out, positive=True)
    _percent(od.max_ejection_percent, f"{path}.maxEjectionPercent", out)
    _detectors(od.detectors, f"{path}.detectors", out)


def _detectors(detectors: CircuitBreakerDetectors | None, path: str,
               out: list[Violation]) -> None:
    if detectors is None:
        out.append(Violation(path, "must be defined (at least one of "
                             f"{', '.join(_DETECTORS)})"))
        return
    given = (detectors.total_failures, detectors.gateway_failures,
             detectors.local_origin_failures, detectors.success_rate,
             detectors.failure_percentage)
    if all(d is None for d in given):
        out.append(Violation(path, f"at least one of {', '.join(_DETECTORS)} has to be "
                             "defined"))
        return
    for name, consecutive in (("totalFailures", detectors.total_failures),
                              ("gatewayFailures", detectors.gateway_failures),
                              ("localOriginFailures", detectors.local_origin_failures)):
        if consecutive is not None:
            _above_zero(consecutive.consecutive, f"{path}.{name}.consecutive", out)
    if (rate := detectors.success_rate) is not None:
        _above_zero(rate.minimum_hosts, f"{path}.successRate.minimumHosts", out)
        _above_zero(rate.request_volume, f"{path}.successRate.requestVolume", out)
        factor = rate.standard_deviation_factor
        if factor is not None:
            milli = stdev_factor_milli(factor)
            where = f"{path}.successRate.standardDeviationFactor"
            if milli is None:
                out.append(Violation(where, f"{factor!r} is not a number"))
            elif not 0 < milli <= _MAX_UINT32:
                out.append(Violation(where, f"{factor!r} must be greater than 0 (and at most "
                                     f"{_MAX_UINT32 // 1000})"))
    if (percentage := detectors.failure_percentage) is not None:
        _above_zero(percentage.minimum_hosts, f"{path}.failurePercentage.minimumHosts", out)
        _above_zero(percentage.request_volume, f"{path}.failurePercentage.requestVolume",
                    out)
        _percent(percentage.threshold, f"{path}.failurePercentage.threshold", out)


def _above_zero(value: int | None, path: str, out: list[Violation]) -> None:
    if value is not None and not 1 <= value <= _MAX_UINT32:
        out.append(Violation(path, f"{value} must be between 1 and {_MAX_UINT32}"))


def _percent(value: int | None, path: str, out: list[Violation]) -> None:
    if value is not None and not 0 <= value <= 100:
        out.append(Violation(path, f"{value} must be between 0 and 100 (a percentage)"))
