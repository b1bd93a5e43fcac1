"""argon2id hashing with parameters from settings, and a dummy hash for unknown users."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import Type

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256


@lru_cache(maxsize=8)
def hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    """The argon2id hasher for one parameter set (cached: building it is not free)."""
    return PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
    )


@lru_cache(maxsize=8)
def _dummy_hash(ph: PasswordHasher) -> str:
    return ph.hash("not a real password: equalises timing for unknown accounts")


def hash_password(ph: PasswordHasher, password: str) -> str:
    """An argon2id hash of the password."""
    return ph.hash(password)


def verify_password(ph: PasswordHasher, password_hash: str | None, password: str) -> bool:
    """True when the password matches; with no hash, spends the same time and returns False."""
    try:
        if password_hash is None:
            ph.verify(_dummy_hash(ph), password + "\0")
            return False
        return ph.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(ph: PasswordHasher, password_hash: str) -> bool:
    """True when the stored hash used other parameters than the current ones."""
    try:
        return ph.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True
