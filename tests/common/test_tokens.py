"""Token issue and verification, including the attacks of the security checklist."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from jose import jwt

from common.tokens import (
    KeySet,
    TokenError,
    issue_token,
    verify_token,
    write_key_pair,
)
from tests.tokens_support import alg_none, b64, claims, hs256_with_public_key, oversized, signed

AUD, ISS = "mergemeet", "mergemeet-api"


@pytest.fixture(scope="module")
def keyset(tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    folder = tmp_path_factory.mktemp("keys")
    write_key_pair(folder, kid="k1")
    return KeySet.load(folder)


def _claims(**overrides: Any) -> dict[str, Any]:
    return claims(**({"aud": AUD, "iss": ISS} | overrides))


def _signed(keyset: KeySet, payload: dict[str, Any], kid: str = "k1") -> str:
    return signed(keyset, payload, kid=kid)


def _verify(keyset: KeySet, token: str, **kwargs: Any) -> Any:
    return verify_token(token, keyset, audience=AUD, issuer=ISS, **kwargs)


def _refused(keyset: KeySet, token: str, code: str, **kwargs: Any) -> None:
    with pytest.raises(TokenError) as excinfo:
        _verify(keyset, token, **kwargs)
    assert excinfo.value.code == code


def test_issued_token_verifies_with_its_claims(keyset: KeySet) -> None:
    token = issue_token(keyset, user_id=42, token_version=3, audience=AUD, issuer=ISS, ttl_s=60)
    claims = _verify(keyset, token, current_version=3)
    assert (claims.user_id, claims.token_version, claims.typ) == (42, 3, "access")
    assert claims.expires_at - claims.issued_at == 60
    assert jwt.get_unverified_header(token)["kid"] == "k1"


def test_public_only_keyset_verifies_but_cannot_sign(keyset: KeySet, tmp_path: Path) -> None:
    (tmp_path / "k1.pub.pem").write_text(keyset.public["k1"])
    public_only = KeySet.load(tmp_path, with_private=False)
    token = issue_token(keyset, user_id=1, token_version=0, audience=AUD, issuer=ISS, ttl_s=60)
    assert _verify(public_only, token).user_id == 1
    with pytest.raises(TokenError, match="no_keys"):
        issue_token(public_only, user_id=1, token_version=0, audience=AUD, issuer=ISS, ttl_s=60)


def test_alg_none_is_refused(keyset: KeySet) -> None:
    _refused(keyset, alg_none(_claims(), kid="k1"), "bad_algorithm")


def test_hs256_signed_with_the_public_key_is_refused(keyset: KeySet) -> None:
    _refused(keyset, hs256_with_public_key(keyset, _claims(), kid="k1"), "bad_algorithm")


def test_another_asymmetric_algorithm_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    token = jwt.encode(_claims(), other.decode(), algorithm="ES384", headers={"kid": "k1"})
    _refused(keyset, token, "bad_algorithm")


def test_expired_token_is_refused(keyset: KeySet) -> None:
    past = time.time() - 3600
    token = issue_token(
        keyset, user_id=1, token_version=0, audience=AUD, issuer=ISS, ttl_s=60, now=past
    )
    _refused(keyset, token, "expired")


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "aud", "jti", "iss"])
def test_missing_required_claim_is_refused(keyset: KeySet, claim: str) -> None:
    _refused(keyset, _signed(keyset, _claims(**{claim: None})), "invalid_claims")


@pytest.mark.parametrize("claim", ["typ", "ver"])
def test_missing_own_claim_is_refused(keyset: KeySet, claim: str) -> None:
    _refused(keyset, _signed(keyset, _claims(**{claim: None})), "invalid_claims")


def test_wrong_audience_is_refused(keyset: KeySet) -> None:
    _refused(keyset, _signed(keyset, _claims(aud="someone-else")), "invalid_claims")


def test_future_not_before_is_refused(keyset: KeySet) -> None:
    _refused(keyset, _signed(keyset, _claims(nbf=int(time.time()) + 600)), "invalid_claims")


def test_unknown_kid_is_refused(keyset: KeySet) -> None:
    _refused(keyset, _signed(keyset, _claims(), kid="k-unknown"), "unknown_kid")


def test_refresh_type_is_refused_as_access(keyset: KeySet) -> None:
    _refused(keyset, _signed(keyset, _claims(typ="refresh")), "wrong_type")


def test_outdated_token_version_is_refused(keyset: KeySet) -> None:
    token = issue_token(keyset, user_id=5, token_version=1, audience=AUD, issuer=ISS, ttl_s=60)
    _refused(keyset, token, "revoked", current_version=2)


def test_oversized_token_is_refused_before_parsing(keyset: KeySet) -> None:
    _refused(keyset, oversized(keyset, _claims()), "too_large")


def test_tampered_signature_is_refused(keyset: KeySet) -> None:
    token = _signed(keyset, _claims())
    head, _payload, sig = token.split(".")
    forged = b64(json.dumps(_claims(sub="1")).encode())
    _refused(keyset, f"{head}.{forged}.{sig}", "bad_signature")


@pytest.mark.parametrize("token", ["", "abc", "a.b.c.d.e", "!!!.###.$$$"])
def test_malformed_tokens_are_refused(keyset: KeySet, token: str) -> None:
    _refused(keyset, token, "malformed")


def test_generated_development_keys_are_private(tmp_path: Path) -> None:
    keyset = KeySet.load(tmp_path / "keys", generate=True)
    assert keyset.active_kid is not None
    private_file = tmp_path / "keys" / f"{keyset.active_kid}.key.pem"
    assert private_file.stat().st_mode & 0o077 == 0
    assert KeySet.load(tmp_path / "keys", generate=True).active_kid == keyset.active_kid


def test_each_public_key_is_parsed_once_and_only_verifies_its_own_tokens(
    keyset: KeySet, tmp_path: Path
) -> None:
    assert keyset.verifier("k1") is keyset.verifier("k1")
    # A second pair under another kid: its parsed key does not verify k1's signatures.
    write_key_pair(tmp_path, kid="k2")
    (tmp_path / "k1.pub.pem").write_text(keyset.public["k1"])
    both = KeySet.load(tmp_path, with_private=False)
    assert both.verifier("k1") is not both.verifier("k2")
    _refused(both, _signed(keyset, _claims(), kid="k2"), "bad_signature")
    assert _verify(both, _signed(keyset, _claims())).user_id == 7
    with pytest.raises(KeyError):
        keyset.verifier("nope")
