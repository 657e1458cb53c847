"""CA commands: record a mesh's certificate authorities in the log before the Mesh that uses
them, once.

- `builtin`: the CA is made here, at the first apply of a Mesh that lists the backend, and
  never again: a later apply, a restart, another API replica or a replay all find it in the
  log (subject `ca.<mesh>.<backend>`, expected sequence 0: of two replicas racing, one CA is
  recorded). Deleting the Mesh keeps it, so a Mesh created again under the same name has the
  same CA and its proxies' certificates stay trusted (reference/security.md §6: never silently
  re-create a CA).
- `provided`: the operator's certificate and key, checked, the key sealed into the log and
  removed from the Mesh that is stored (the API never returns it); recorded again only when
  the operator provides another certificate.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from events.commands.handler import Append, CommandHandler, Current, Decision, Keep
from events.errors import InvalidResource, PermanentError, Violation
from events.event_types import CaCreated, ca_purpose
from events.identity.pki import check_provided_ca, create_ca, normalize_key
from events.identity.sealing import SecretKey
from events.resources import Mesh, MtlsBackend, MtlsBackendConf, ProvidedSecret
from events.subjects import ca_subject

__all__ = ["CaCommands", "NoSecretKey"]


class NoSecretKey(PermanentError):
    """mTLS needs a secret key to seal its CA keys, and this control plane has none."""


class CaCommands:
    def __init__(self, handler: CommandHandler, *, zone: str, secret_key: SecretKey | None,
                 clock: Callable[[], int]) -> None:
        self._handler = handler
        self._zone = zone
        self._secret_key = secret_key
        self._clock = clock

    def stored(self, mesh: Mesh) -> Mesh:
        """`mesh` as the log stores it: provided CA keys removed (they are sealed in the CA
        event instead)."""
        if mesh.mtls is None or not any(_provided_key(b) for b in mesh.mtls.backends):
            return mesh
        backends = [msgspec.structs.replace(b, conf=msgspec.structs.replace(b.conf, key=None))
                    if _provided_key(b) and b.conf else b for b in mesh.mtls.backends]
        return msgspec.structs.replace(mesh, mtls=msgspec.structs.replace(
            mesh.mtls, backends=backends))

    async def record(self, mesh: Mesh) -> None:
        """Record the CA of every backend `mesh` lists, where the log lacks it."""
        if mesh.mtls is None or not mesh.mtls.backends:
            return
        self._check_provided(mesh)
        for backend in mesh.mtls.backends:
            await self._record_one(mesh.name, backend)

    def _check_provided(self, mesh: Mesh) -> None:
        assert mesh.mtls is not None
        violations = []
        for i, backend in enumerate(mesh.mtls.backends):
            conf = backend.conf
            if backend.type != "provided" or conf is None or not _provided_key(backend):
                continue
            assert conf.cert is not None and conf.key is not None
            for field, message in check_provided_ca(conf.cert.inline_string or "",
                                                    conf.key.inline_string or ""):
                violations.append(Violation(
                    f"mtls.backends[{i}].conf.{field}.inlineString", message))
        if violations:
            raise InvalidResource("Mesh", violations)

    async def _record_one(self, mesh: str, backend: MtlsBackend) -> None:
        subject = ca_subject(mesh, backend.name, self._zone)
        purpose = ca_purpose(mesh, backend.name)
        provided = backend.conf if backend.type == "provided" else None
        secret_key = self._secret_key
        if secret_key is None:
            raise NoSecretKey(
                f"mesh {mesh!r} enables mTLS backend {backend.name!r}, and this control plane "
                "has no secret key to seal its CA with: start it with --secret-key-file "
                "(meshlog up makes one in its data dir)")

        def decide(current: Current) -> Decision:
            recorded = current.event if isinstance(current.event, CaCreated) else None
            if provided is None:
                if recorded is not None:
                    return Keep()  # a builtin CA is made once, ever
                cert, key = create_ca(mesh, backend.name, self._clock())
                return Append(CaCreated(at=self._clock(), mesh=mesh, backend=backend.name,
                                        type="builtin", cert=cert,
                                        key=secret_key.seal(key, purpose=purpose)),
                              content=f"builtin {mesh}/{backend.name}".encode())
            cert = (_inline(provided.cert)).strip() + "\n"
            if recorded is not None and recorded.cert == cert:
                return Keep()
            if not _provided_key(backend):
                raise InvalidResource("Mesh", [Violation(
                    f"mtls.backends[name={backend.name}].conf.key.inlineString",
                    "required: the log has no CA with this certificate yet")])
            key = normalize_key(_inline(provided.key))
            return Append(CaCreated(at=self._clock(), mesh=mesh, backend=backend.name,
                                    type="provided", cert=cert,
                                    key=secret_key.seal(key, purpose=purpose)),
                          content=f"provided {mesh}/{backend.name} {cert}".encode())

        await self._handler.execute(subject, decide)


def _inline(secret: ProvidedSecret | None) -> str:
    return (secret.inline_string or "") if secret is not None else ""


def _provided_key(backend: MtlsBackend) -> bool:
    conf: MtlsBackendConf | None = backend.conf
    return (backend.type == "provided" and conf is not None and conf.key is not None
            and bool(conf.key.inline_string))
