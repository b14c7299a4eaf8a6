"""Hand-built JWTs for the attacks of the security checklist, shared by every token test.

``common/tokens.py`` is the only code that issues real tokens; these builders make the tokens
it must refuse (forged algorithms, missing claims, foreign ``kid``), for the unit tests of
``verify_token`` and for the same attacks against the running services.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from jose import jwt

from common.tokens import ALGORITHM, MAX_TOKEN_BYTES, KeySet


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(*, aud: str, iss: str, sub: str = "7", ver: int = 0, **overrides: Any) -> dict[str, Any]:
    """An access token's claims, valid for ten minutes; an override of None drops the claim."""
    now = int(time.time())
    base = {
        "sub": sub,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "aud": aud,
        "iss": iss,
        "typ": "access",
        "jti": "j1",
        "ver": ver,
    }
    return {k: v for k, v in (base | overrides).items() if v is not None}


def signed(keyset: KeySet, payload: dict[str, Any], *, kid: str | None = None) -> str:
    """``payload`` signed with the key set's real private key (under ``kid`` in the header)."""
    key_id = keyset.active_kid or sorted(keyset.private)[-1]
    headers = {"kid": kid or key_id}
    return str(jwt.encode(payload, keyset.private[key_id], algorithm=ALGORITHM, headers=headers))


def alg_none(payload: dict[str, Any], *, kid: str) -> str:
    """An unsigned token (``alg: none``)."""
    header = b64(json.dumps({"alg": "none", "kid": kid}).encode())
    return f"{header}.{b64(json.dumps(payload).encode())}."


def hs256_with_public_key(keyset: KeySet, payload: dict[str, Any], *, kid: str) -> str:
    """The algorithm-confusion forgery: HMAC keyed with the verifier's public key."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(payload).encode())
    mac = hmac.new(keyset.public[kid].encode(), f"{header}.{body}".encode(), hashlib.sha256)
    return f"{header}.{body}.{b64(mac.digest())}"


def oversized(keyset: KeySet, payload: dict[str, Any]) -> str:
    """A correctly signed token longer than the length cap."""
    return signed(keyset, payload | {"pad": "x" * MAX_TOKEN_BYTES})
