"""Issue and verify the JWTs that both services share: the one place python-jose is called.

python-jose accepts any algorithm when none is given and tokens without ``exp`` or ``aud``
unless told otherwise, so verification here pins ES256, requires every claim, looks the ``kid``
up in a key set, caps the token's length and refuses JWE (five-part) tokens before the library
sees them. The API holds private keys; a realtime node loads public keys only, so a compromised
node cannot mint tokens.

Key files live in one folder: ``<kid>.key.pem`` (private, API only) and ``<kid>.pub.pem``.
Development keys are generated there on first use; outside development they must exist.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jwt
from jose.backends.base import Key
from jose.exceptions import ExpiredSignatureError, JWTClaimsError, JWTError

from common.settings import Settings

ALGORITHM: Final = "ES256"
MAX_TOKEN_BYTES: Final = 4096
TokenType = Literal["access", "refresh"]
_REQUIRED_CLAIMS: Final = ("sub", "exp", "iat", "aud", "iss", "typ", "jti", "ver")


class TokenError(Exception):
    """A token was refused; ``code`` is the stable reason shown to clients."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified content of an access token."""

    user_id: int
    token_version: int
    expires_at: int
    issued_at: int
    jti: str
    typ: str


@dataclass(slots=True)
class KeySet:
    """Public keys by ``kid`` for verifying, and optionally the active private key for signing."""

    public: dict[str, str] = field(default_factory=dict)
    private: dict[str, str] = field(default_factory=dict)
    active_kid: str | None = None
    #: Public keys parsed once per ``kid``: python-jose parses a PEM string on every decode,
    #: ~80 of the ~260 µs a verification costs (docs/BENCHMARKS.md).
    _verifiers: dict[str, Key] = field(default_factory=dict, repr=False, compare=False)

    def verifier(self, kid: str) -> Key:
        """The parsed public key of ``kid`` (KeyError when unknown), built on first use."""
        key = self._verifiers.get(kid)
        if key is None:
            key = self._verifiers[kid] = jwk.construct(self.public[kid], ALGORITHM)
        return key

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        active_kid: str | None = None,
        with_private: bool = True,
        generate: bool = False,
    ) -> KeySet:
        """Read every key in ``folder``; generate one pair first when ``generate`` and empty."""
        if generate and not any(folder.glob("*.pub.pem")):
            write_key_pair(folder, kid=f"dev-{secrets.token_hex(4)}")
        keys = cls()
        for pub in sorted(folder.glob("*.pub.pem")):
            kid = pub.name.removesuffix(".pub.pem")
            keys.public[kid] = pub.read_text()
            private_path = folder / f"{kid}.key.pem"
            if with_private and private_path.exists():
                keys.private[kid] = private_path.read_text()
        if not keys.public:
            raise TokenError("no_keys", f"no *.pub.pem in {folder}")
        if with_private:
            if active_kid is None and keys.private:
                active_kid = sorted(keys.private)[-1]
            if active_kid is not None and active_kid not in keys.private:
                raise TokenError("no_keys", f"no private key for kid {active_kid!r}")
            keys.active_kid = active_kid
        return keys


def write_key_pair(folder: Path, *, kid: str) -> None:
    """Create a P-256 key pair as ``<kid>.key.pem`` (mode 0600) and ``<kid>.pub.pem``."""
    folder.mkdir(parents=True, exist_ok=True)
    private_key = ec.generate_private_key(ec.SECP256R1())
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path = folder / f"{kid}.key.pem"
    private_path.touch(mode=0o600)
    private_path.write_bytes(private_pem)
    (folder / f"{kid}.pub.pem").write_bytes(public_pem)


def issue_token(
    keys: KeySet,
    *,
    user_id: int,
    token_version: int,
    audience: str,
    issuer: str,
    ttl_s: int,
    typ: TokenType = "access",
    now: float | None = None,
) -> str:
    """Sign a token with the active key; ``now`` is injectable for tests."""
    if keys.active_kid is None:
        raise TokenError("no_keys", "this key set cannot sign")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "aud": audience,
        "iss": issuer,
        "typ": typ,
        "jti": secrets.token_urlsafe(12),
        "ver": token_version,
    }
    return str(
        jwt.encode(
            claims,
            keys.private[keys.active_kid],
            algorithm=ALGORITHM,
            headers={"kid": keys.active_kid},
        )
    )


def verify_token(
    token: str,
    keys: KeySet,
    *,
    audience: str,
    issuer: str,
    typ: TokenType = "access",
    current_version: int | None = None,
) -> Claims:
    """Return the claims of a valid token or raise :class:`TokenError` with a stable code.

    Codes: ``too_large``, ``malformed``, ``bad_algorithm``, ``unknown_kid``, ``expired``,
    ``invalid_claims``, ``bad_signature``, ``wrong_type``, ``revoked`` (token version older than
    ``current_version``).
    """
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("too_large")
    if token.count(".") != 2:
        raise TokenError("malformed", "not a three-part JWS")
    try:
        header = jwt.get_unverified_header(token)
    except JWTError as exc:
        raise TokenError("malformed", "unreadable header") from exc
    if header.get("alg") != ALGORITHM:
        raise TokenError("bad_algorithm")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys.public:
        raise TokenError("unknown_kid")
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            keys.verifier(kid),
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            options={f"require_{name}": True for name in ("exp", "iat", "aud", "iss", "sub", "jti")}
            | {"leeway": 0},
        )
    except ExpiredSignatureError as exc:
        raise TokenError("expired") from exc
    except JWTClaimsError as exc:
        raise TokenError("invalid_claims", str(exc)) from exc
    except JWTError as exc:
        # python-jose reports a missing required claim as a plain JWTError.
        code = "invalid_claims" if "missing required key" in str(exc) else "bad_signature"
        raise TokenError(code, str(exc)) from exc
    return _claims_from(payload, typ=typ, current_version=current_version)


def _claims_from(payload: dict[str, Any], *, typ: str, current_version: int | None) -> Claims:
    missing = [name for name in _REQUIRED_CLAIMS if name not in payload]
    if missing:
        raise TokenError("invalid_claims", f"missing {', '.join(missing)}")
    if payload["typ"] != typ:
        raise TokenError("wrong_type")
    sub, ver, exp, iat = payload["sub"], payload["ver"], payload["exp"], payload["iat"]
    if not (isinstance(sub, str) and sub.isdigit() and len(sub) <= 19):
        raise TokenError("invalid_claims", "sub")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (ver, exp, iat)):
        raise TokenError("invalid_claims", "ver/exp/iat")
    if current_version is not None and ver != current_version:
        raise TokenError("revoked")
    return Claims(
        user_id=int(sub),
        token_version=ver,
        expires_at=exp,
        issued_at=iat,
        jti=str(payload["jti"]),
        typ=typ,
    )


def keyset_from_settings(settings: Settings, *, with_private: bool) -> KeySet:
    """The key set a service uses: the API signs (``with_private``), realtime only verifies.

    Keys are generated on first use in development and test only; in production the folder
    named by ``MM_JWT_KEYS_DIR`` must hold them.
    """
    return KeySet.load(
        settings.keys_dir,
        active_kid=settings.jwt_active_kid,
        with_private=with_private,
        generate=settings.is_development,
    )
