"""Secrets at rest (sink API keys): Fernet, keyed from the environment, never from the repository.

The key is derived (HKDF-SHA256) from ``AUTOPLAY_ENCRYPTION_KEY`` when it is
set, else from Django's ``SECRET_KEY``. Values written under the
``SECRET_KEY``-derived key stay readable after ``AUTOPLAY_ENCRYPTION_KEY`` is
introduced (MultiFernet tries both), so setting it later loses nothing.
"""

from __future__ import annotations

import base64
import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_INFO = b"autoplay-storage sink api keys v1"


class SecretUnreadableError(ValueError):
    """A stored secret cannot be decrypted with the current keys."""


def _derive(material: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(material.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _fernet() -> MultiFernet:
    keys = []
    explicit = os.environ.get("AUTOPLAY_ENCRYPTION_KEY", "")
    if explicit:
        keys.append(_derive(explicit))
    keys.append(_derive(settings.SECRET_KEY))
    return MultiFernet(keys)


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadableError(
            "the stored key cannot be decrypted: AUTOPLAY_ENCRYPTION_KEY or SECRET_KEY changed "
            "since it was saved; enter the key again"
        ) from None
