"""The gateway's gRPC port over TLS (`xds_gateway.server.serving_tls`), with real grpcio clients
against an in-process gateway whose view the real fold fills.

- a client that trusts the gateway's CA gets ADS (SotW and Delta) responses; a plaintext client
  and a client that trusts another CA get none (the handshake fails), and the gateway goes on
  serving the others;
- a rotated certificate pair reaches new connections without a restart; an open stream keeps
  its connection; half a rotation (a new certificate beside the old key) is not served;
- the files are checked at start: unreadable, not PEM, encrypted, mismatched, expired, not yet
  valid, each an error naming the file;
- a gateway that requires tokens and serves plaintext says so loudly at start.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import shutil
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from services.runtime.xds_certificate import XdsCertificate, ensure_xds_certificate
from tests.xds_gateway._ads import (
    AdsClient,
    DeltaAdsClient,
    Projection,
    serving_gateway,
)
from xds_gateway import Gateway
from xds_gateway.server.serving_tls import InvalidServingTls, ServingTls
from xds_gateway.type_urls import CLUSTER

HOSTS = ["localhost", "127.0.0.1"]


def _pair(folder: Path, *, now: datetime.datetime | None = None) -> XdsCertificate:
    """A CA and a serving certificate it issued for localhost and 127.0.0.1."""
    return ensure_xds_certificate(folder, HOSTS, now=now)


def _serving(tmp_path: Path, pair: XdsCertificate) -> tuple[Path, Path]:
    """A copy of `pair`'s certificate and key where the gateway reads them (rotations replace
    these files)."""
    cert, key = tmp_path / "serving.crt", tmp_path / "serving.key"
    shutil.copy(pair.cert_file, cert)
    shutil.copy(pair.key_file, key)
    return cert, key


def _gateway(tls: ServingTls | None, *, no_auth: bool = True
             ) -> contextlib.AbstractAsyncContextManager[Gateway]:
    return serving_gateway(Projection(), tls=tls, no_auth=no_auth)


_OWN_CONNECTIONS = [("grpc.use_local_subchannel_pool", 1)]
"""Each channel its own connection (and handshake), never one shared with an earlier channel."""


def _secure(gateway: Gateway, ca_file: Path, host: str = "localhost", *,
            name: str | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(ca_file.read_bytes())
    options = _OWN_CONNECTIONS + ([("grpc.ssl_target_name_override", name)] if name else [])
    return grpc.aio.secure_channel(f"{host}:{gateway.port}", credentials, options=options)


async def _cds(channel: grpc.aio.Channel, client: type[AdsClient] = AdsClient) -> str:
    """The type of the first response to a CDS request on a new stream (or the call fails)."""
    ads = client(channel)
    ads.send(CLUSTER, node_id="default.web-1")
    try:
        return str((await ads.recv()).type_url)
    finally:
        ads.close()


async def _refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await _cds(channel)
    return failed.value.code()


async def test_a_client_that_trusts_the_ca_is_served_sotw_and_delta(tmp_path: Path) -> None:
    pair = _pair(tmp_path / "cp")
    async with _gateway(ServingTls(*_serving(tmp_path, pair))) as gw:
        for host in ("localhost", "127.0.0.1"):  # the certificate names both
            async with _secure(gw, pair.ca_file, host) as channel:
                assert await _cds(channel) == CLUSTER
                assert await _cds(channel, DeltaAdsClient) == CLUSTER


async def test_plaintext_and_strangers_get_nothing_and_the_others_go_on(tmp_path: Path) -> None:
    pair, stranger = _pair(tmp_path / "cp"), _pair(tmp_path / "other")
    async with _gateway(ServingTls(*_serving(tmp_path, pair))) as gw, \
            _secure(gw, pair.ca_file) as trusted:
        served = AdsClient(trusted)
        served.send(CLUSTER, node_id="default.web-1")
        assert (await served.recv()).type_url == CLUSTER
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}",
                                             options=_OWN_CONNECTIONS) as plaintext:
            assert await _refused(plaintext) == grpc.StatusCode.UNAVAILABLE
        async with _secure(gw, stranger.ca_file) as untrusting:
            assert await _refused(untrusting) == grpc.StatusCode.UNAVAILABLE
        # a certificate for other names: the CA is trusted, the host is not in it
        async with _secure(gw, pair.ca_file, name="xds.example.com") as misnamed:
            assert await _refused(misnamed) == grpc.StatusCode.UNAVAILABLE
        # the stream opened before is still served, and new ones are
        served.send(CLUSTER, node_id="default.web-1", names=["nothing"])
        assert (await served.recv()).type_url == CLUSTER
        served.close()
        assert await _cds(trusted) == CLUSTER


async def test_a_rotated_pair_reaches_new_connections(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old, new = _pair(tmp_path / "old"), _pair(tmp_path / "new")
    cert, key = _serving(tmp_path, old)
    async with _gateway(ServingTls(cert, key)) as gw, _secure(gw, old.ca_file) as before:
        open_stream = AdsClient(before)
        open_stream.send(CLUSTER, node_id="default.web-1")
        assert (await open_stream.recv()).type_url == CLUSTER

        # half a rotation: the new certificate beside the old key is not served
        with caplog.at_level(logging.WARNING, logger="meshlog.xds"):
            _replace(pair_file=new.cert_file, at=cert)
            async with _secure(gw, old.ca_file) as channel:
                assert await _cds(channel) == CLUSTER
        assert f"--tls-key-file {key}: the key does not belong to the certificate" in (
            caplog.text)

        _replace(pair_file=new.key_file, at=key)  # the rotation completes
        async with _secure(gw, new.ca_file) as channel:
            assert await _cds(channel) == CLUSTER
        async with _secure(gw, old.ca_file) as channel:
            assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE

        # the stream opened before the rotation keeps its connection
        open_stream.send(CLUSTER, node_id="default.web-1", names=["nothing"])
        assert (await open_stream.recv()).type_url == CLUSTER
        open_stream.close()


def _replace(*, pair_file: Path, at: Path) -> None:
    """Rename a new file over `at`, as a certificate manager does (a new inode)."""
    staged = at.with_name(f".{at.name}.new")
    shutil.copy(pair_file, staged)
    staged.replace(at)


# --- checked at start -------------------------------------------------------------------------


def _encrypted(key_file: Path, to: Path) -> Path:
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    to.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.BestAvailableEncryption(b"secret")))
    return to


def test_bad_files_are_refused_at_start_naming_the_file(tmp_path: Path) -> None:
    pair, other = _pair(tmp_path / "cp"), _pair(tmp_path / "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    cases = [
        (missing, pair.key_file, f"--tls-cert-file {missing}: cannot read it "
                                 f"(No such file or directory)"),
        (pair.cert_file, missing, f"--tls-key-file {missing}: cannot read it"),
        (garbage, pair.key_file, f"--tls-cert-file {garbage}: not a PEM certificate"),
        (pair.cert_file, garbage, f"--tls-key-file {garbage}: not a PEM private key"),
        (pair.cert_file, _encrypted(pair.key_file, tmp_path / "locked.key"),
         f"--tls-key-file {tmp_path / 'locked.key'}: the key is encrypted"),
        (pair.cert_file, other.key_file,
         f"--tls-key-file {other.key_file}: the key does not belong to the certificate in "
         f"{pair.cert_file}"),
    ]
    for cert, key, said in cases:
        with pytest.raises(InvalidServingTls) as refused:
            ServingTls(cert, key)
        assert str(refused.value).startswith(said), str(refused.value)


@pytest.mark.parametrize(("years", "said"), [(-11, "has expired"), (1, "is not valid yet")])
def test_a_certificate_not_valid_now_is_refused(tmp_path: Path, years: int, said: str) -> None:
    now = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365 * years)
    pair = _pair(tmp_path / "cp", now=now)
    with pytest.raises(InvalidServingTls) as refused:
        ServingTls(pair.cert_file, pair.key_file)
    assert str(refused.value).startswith(
        f"--tls-cert-file {pair.cert_file}: the certificate {said}: it is valid from ")


# --- the warning ------------------------------------------------------------------------------


async def test_tokens_over_plaintext_are_a_loud_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="meshlog.xds"):
        async with _gateway(None, no_auth=False):
            pass
        assert "requires dataplane tokens but serves PLAINTEXT" in caplog.text
        caplog.clear()
        pair = _pair(tmp_path / "cp")
        async with _gateway(ServingTls(pair.cert_file, pair.key_file), no_auth=False):
            pass
    assert "PLAINTEXT" not in caplog.text
    assert f"over TLS (certificate {pair.cert_file}" in caplog.text
