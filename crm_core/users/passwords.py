"""Password hashing with scrypt (memory-hard, in the standard library)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_R = 8
_P = 1
_DKLEN = 32


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, *, n: int = 2**15) -> str:
    """Return ``scrypt$n$r$p$salt$hash`` for ``password``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=_R,
        p=_P,
        dklen=_DKLEN,
        maxmem=256 * n * _R + 1024 * 1024,
    )
    return f"scrypt${n}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; a malformed hash never matches."""
    try:
        scheme, n_s, r_s, p_s, salt_s, digest_s = encoded.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, expected = base64.b64decode(salt_s), base64.b64decode(digest_s)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=len(expected),
        maxmem=256 * n * r + 1024 * 1024,
    )
    return hmac.compare_digest(digest, expected)


def needs_rehash(encoded: str, *, n: int) -> bool:
    """True when ``encoded`` was made with other cost parameters than the configured ones."""
    parts = encoded.split("$")
    return len(parts) != 6 or parts[0] != "scrypt" or parts[1:4] != [str(n), str(_R), str(_P)]


def new_password(length: int = 16) -> str:
    """A random password without look-alike characters, for first-start and generated accounts."""
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def hash_token(token: str) -> str:
    """Tokens are 256-bit random strings, so a fast hash suffices."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)
