"""Secrets shown safely: URLs with their passwords masked, tokens by a fingerprint."""

from __future__ import annotations

import hashlib
import re

_QUERY_PASSWORD = re.compile(r"(?i)(\bpassword=)('(?:[^'\\]|\\.)*'|[^&\s]*)")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***: safe to log."""
    scheme, sep, rest = url.partition("://")
    # Up to the last "@": a password pasted without percent-encoding may hold "/", "#" or "@".
    userinfo, at, tail = rest.rpartition("@")
    if sep and at and ":" in userinfo:
        url = f"{scheme}://{userinfo.split(':', 1)[0]}:***@{tail}"
    return _QUERY_PASSWORD.sub(r"\1***", url)


def fingerprint(token: str) -> str:
    """A short name for a token that tells tokens apart and cannot be turned back into one."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]
