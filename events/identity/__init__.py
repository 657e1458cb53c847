"""Identity: sealed secrets, the meshes' certificate authorities, workload certificates and
signed tokens. Pure functions of their inputs (keys, names, times), so that what the log
records reproduces the same certificates on every replay and every replica."""

from events.identity.sealing import SECRET_KEY_ENV, SealedSecretError, SecretKey

__all__ = ["SECRET_KEY_ENV", "SealedSecretError", "SecretKey"]
