"""Token issue and verification (events.identity.tokens): Kuma's claims, ES256 only, times
against the caller's clock, and refusals that say why without repeating the token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import msgspec
import pytest

from events.identity.tokens import (
    DATAPLANE_TOKEN,
    USER_TOKEN,
    ZONE_TOKEN,
    DataplaneClaims,
    InvalidToken,
    KeyId,
    SigningKey,
    TokenExpired,
    UserClaims,
    ZoneClaims,
    dataplane_claims,
    format_valid_for,
    generate_key_pair,
    key_id,
    load_private_key,
    load_public_key,
    parse_key_id,
    parse_valid_for,
    read_header,
    unverified_claims,
    user_claims,
    verify,
    zone_claims,
)

NOW = 1_700_000_000
KID = KeyId(purpose=DATAPLANE_TOKEN, mesh="default", serial=1)


def _key(kid: KeyId = KID) -> SigningKey:
    private, _ = generate_key_pair()
    return SigningKey(kid, load_private_key(private))


def _dataplane_token(key: SigningKey, *, valid_for_s: int = 3600, now: int = NOW,
                     tags: dict[str, list[str]] | None = None) -> str:
    return key.sign(dataplane_claims(mesh="default", name="web-1", tags=tags or {},
                                     valid_for_s=valid_for_s, now_s=now))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")

    def pad(s: str) -> str:
        return s + "=" * (-len(s) % 4)

    return (json.loads(base64.urlsafe_b64decode(pad(header))),
            json.loads(base64.urlsafe_b64decode(pad(payload))), signature)


def test_a_dataplane_token_carries_kumas_claims_and_the_kid() -> None:
    key = _key()
    token = _dataplane_token(key, tags={"kuma.io/service": ["web", "web"]})
    header, payload, _ = _parts(token)
    assert header == {"alg": "ES256", "kid": "dataplane-token/default/1", "typ": "JWT"}
    assert set(payload) == {"Name", "Mesh", "Tags", "Type", "Workload", "jti", "iat", "nbf",
                            "exp"}
    assert (payload["Name"], payload["Mesh"], payload["Type"], payload["Workload"]) == (
        "web-1", "default", "dataplane", "")
    assert payload["Tags"] == {"kuma.io/service": ["web"]}
    assert (payload["iat"], payload["nbf"], payload["exp"]) == (NOW, NOW - 5, NOW + 3600)
    claims = verify(token, key.public_key, DataplaneClaims, now_s=NOW)
    assert (claims.mesh, claims.name, claims.jti) == ("default", "web-1", payload["jti"])


def test_a_dataplane_token_for_a_group_names_no_dataplane() -> None:
    """Kuma's token for any Dataplane the tags and workload allow: `Name` empty."""
    key = _key()
    token = key.sign(dataplane_claims(mesh="default", name="", workload="web", valid_for_s=60,
                                      tags={"kuma.io/service": ["web"]}, now_s=NOW))
    _, payload, _ = _parts(token)
    assert (payload["Name"], payload["Workload"]) == ("", "web")
    claims = verify(token, key.public_key, DataplaneClaims, now_s=NOW)
    assert (claims.name, claims.workload, claims.tags) == ("", "web",
                                                          {"kuma.io/service": ["web"]})


def test_a_dataplane_token_made_before_workload_still_verifies() -> None:
    """Claims without `Workload` (meshlog before it, Kuma before 2.13): any workload."""
    private = load_private_key(generate_key_pair()[0])
    claims = dataplane_claims(mesh="default", name="web-1", tags={}, valid_for_s=60,
                              now_s=NOW)
    payload = {k: v for k, v in msgspec.to_builtins(claims).items() if k != "Workload"}
    token = jwt.encode(payload, private, algorithm="ES256", headers={"kid": str(KID)})
    verified = verify(token, private.public_key(), DataplaneClaims, now_s=NOW)
    assert (verified.name, verified.workload) == ("web-1", "")


def test_a_user_token_carries_name_and_groups() -> None:
    key = _key(KeyId(purpose=USER_TOKEN, mesh=None, serial=1))
    token = key.sign(user_claims(name="jane", groups=["team-a", "team-a", "ops"],
                                 valid_for_s=60, now_s=NOW))
    header, payload, _ = _parts(token)
    assert header["kid"] == "user-token/_/1"
    assert (payload["Name"], payload["Groups"]) == ("jane", ["ops", "team-a"])
    assert verify(token, key.public_key, UserClaims, now_s=NOW).groups == ["ops", "team-a"]


def test_each_token_has_its_own_id() -> None:
    key = _key()
    ids = {_parts(_dataplane_token(key))[1]["jti"] for _ in range(3)}
    assert len(ids) == 3


def test_an_expired_token_is_refused_saying_when_it_expired() -> None:
    key = _key()
    token = _dataplane_token(key, valid_for_s=60)
    verify(token, key.public_key, DataplaneClaims, now_s=NOW + 59)
    with pytest.raises(TokenExpired, match=r"expired at 2023-11-14T22:14:20Z"):
        verify(token, key.public_key, DataplaneClaims, now_s=NOW + 60)


def test_a_token_is_refused_before_its_not_before() -> None:
    key = _key()
    token = _dataplane_token(key)
    verify(token, key.public_key, DataplaneClaims, now_s=NOW - 5)  # the 5 s allowance
    with pytest.raises(InvalidToken, match="not valid before"):
        verify(token, key.public_key, DataplaneClaims, now_s=NOW - 6)


def test_a_token_signed_by_another_key_is_refused() -> None:
    token = _dataplane_token(_key())
    with pytest.raises(InvalidToken, match="signature does not verify") as caught:
        verify(token, _key().public_key, DataplaneClaims, now_s=NOW)
    assert token not in str(caught.value)


def test_a_tampered_payload_is_refused() -> None:
    key = _key()
    token = _dataplane_token(key)
    header, _, signature = token.split(".")
    claims = _parts(token)[1]
    claims["Name"] = "db-1"
    forged = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(InvalidToken, match="signature does not verify"):
        verify(forged, key.public_key, DataplaneClaims, now_s=NOW)


def test_alg_none_is_refused() -> None:
    key = _key()
    _, payload, _ = _parts(_dataplane_token(key))
    header = {"alg": "none", "kid": str(KID)}
    unsigned = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}."
    with pytest.raises(InvalidToken, match="signed with 'none'; meshlog accepts ES256 only"):
        read_header(unsigned)
    with pytest.raises(InvalidToken):
        verify(unsigned, key.public_key, DataplaneClaims, now_s=NOW)


def test_hs256_keyed_with_the_public_key_is_refused() -> None:
    """The classic confusion: an HMAC whose secret is the (public) verification key."""
    private, public = generate_key_pair()
    key = SigningKey(KID, load_private_key(private))
    _, payload, _ = _parts(_dataplane_token(key))
    signing_input = (f"{_b64(json.dumps({'alg': 'HS256', 'kid': str(KID)}).encode())}."
                     f"{_b64(json.dumps(payload).encode())}")
    mac = hmac.new(public.encode(), signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{_b64(mac)}"
    with pytest.raises(InvalidToken, match="'HS256'"):
        read_header(forged)
    with pytest.raises(InvalidToken):
        verify(forged, load_public_key(public), DataplaneClaims, now_s=NOW)


def test_garbage_is_not_a_jwt() -> None:
    for garbage in ("", "garbage", "a.b.c", "Bearer x"):
        with pytest.raises(InvalidToken, match="not a JWT"):
            read_header(garbage)


def test_a_kid_that_names_no_meshlog_key_is_refused() -> None:
    private, _ = generate_key_pair()
    token = jwt.encode({"Name": "x"}, load_private_key(private), algorithm="ES256",
                       headers={"kid": "somebody-else"})
    with pytest.raises(InvalidToken, match="kid 'somebody-else' names no meshlog signing key"):
        read_header(token)


def test_a_user_token_does_not_pass_as_a_dataplane_token() -> None:
    key = _key()
    token = key.sign(user_claims(name="jane", groups=[], valid_for_s=60, now_s=NOW))
    with pytest.raises(InvalidToken, match="not those of a dataplane token"):
        verify(token, key.public_key, DataplaneClaims, now_s=NOW)


def test_unverified_claims_read_a_token_without_its_key() -> None:
    token = _dataplane_token(_key())
    assert unverified_claims(token, DataplaneClaims).name == "web-1"


def test_key_ids_round_trip() -> None:
    for kid in ("dataplane-token/default/1", "dataplane-token/a.b-c/12", "user-token/_/3"):
        parsed = parse_key_id(kid)
        assert parsed is not None and str(parsed) == kid
    assert parse_key_id("user-token/_/1") == KeyId(purpose=USER_TOKEN, mesh=None, serial=1)
    for wrong in ("dataplane-token/default/0", "ca/default/1", "dataplane-token/Default/1",
                  "dataplane-token/default", ""):
        assert parse_key_id(wrong) is None


def test_globals_zone_token_kids_name_global_and_no_other_kid_changes() -> None:
    kid = key_id(ZONE_TOKEN, None, 2, zone="_global")
    assert str(kid) == "_global/zone-token/_/2" and kid.local_form == "zone-token/_/2"
    assert parse_key_id("_global/zone-token/_/2") == kid
    assert str(key_id(ZONE_TOKEN, None, 1, zone="west")) == "zone-token/_/1"
    assert str(key_id(USER_TOKEN, None, 1, zone="_global")) == "user-token/_/1"
    for wrong in ("_global/user-token/_/1", "_global/zone-token/default/1",
                  "west/zone-token/_/1", "_global/zone-token/_/0"):
        assert parse_key_id(wrong) is None


@pytest.mark.parametrize(("text", "seconds"), [
    ("24h", 86_400), ("30m", 1800), ("1h30m", 5400), ("90s", 90), ("8760h", 31_536_000),
    ("1.5h", 5400), ("87600h", 315_360_000)])
def test_validity_reads_go_durations(text: str, seconds: int) -> None:
    assert parse_valid_for(text) == seconds


@pytest.mark.parametrize(("text", "problem"), [
    ("24", "not a duration"), ("1d", "not a duration"), ("", "not a duration"),
    ("h", "not a duration"), ("0s", "less than 1s"), ("87601h", "more than 87600h")])
def test_validity_refuses_what_is_no_duration_in_range(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_valid_for(text)


def test_validity_formats_back() -> None:
    assert [format_valid_for(s) for s in (86_400, 1800, 90)] == ["24h", "30m", "90s"]


def test_a_zone_token_carries_kumas_zone_and_scope_and_its_own_kid() -> None:
    key = _key(KeyId(purpose=ZONE_TOKEN, mesh=None, serial=1))
    token = key.sign(zone_claims(zone="west", scope=["ingress", "ingress"], valid_for_s=60,
                                 now_s=NOW))
    header, payload, _ = _parts(token)
    assert header["kid"] == "zone-token/_/1"
    assert set(payload) == {"Zone", "Scope", "jti", "iat", "nbf", "exp"}
    assert (payload["Zone"], payload["Scope"]) == ("west", ["ingress"])
    claims = verify(token, key.public_key, ZoneClaims, now_s=NOW)
    assert (claims.zone, claims.scope) == ("west", ["ingress"])
    assert parse_key_id("zone-token/_/1") == KeyId(purpose=ZONE_TOKEN, mesh=None, serial=1)


def test_a_dataplane_token_does_not_pass_as_a_zone_token() -> None:
    key = _key()
    with pytest.raises(InvalidToken, match="not those of a zone token"):
        verify(_dataplane_token(key), key.public_key, ZoneClaims, now_s=NOW)
