"""API keys for the server: `Authorization: Bearer <key>` or `x-api-key: <key>`, or 401.

What a deployed function gets instead: on AWS the HTTP API's JWT authorizer (serverless.yml), on Azure
function keys (AuthLevel.FUNCTION), on GCP IAM (no unauthenticated invoker). This is for the server
(`slimserve serve`, the SageMaker container behind a private network, Vertex AI / Azure ML containers)
and for any function where `SLIMSERVE_API_KEY(_FILE)` is set on top of the platform's own check.

Keys are compared with `hmac.compare_digest` against every accepted key (a rotation holds two), so the
time taken says nothing about how much of a guess was right. Health routes stay open: load balancers
and SageMaker's `/ping` call them without credentials. Keys never reach a log line or an error message.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from shared.errors import Unauthorized

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/ping"})


class ApiKeys:
    def __init__(self, keys: list[str]):
        keys = [k for k in keys if k]
        if not keys:
            raise ValueError("no API key given")
        self._keys = [k.encode("utf-8") for k in keys]

    @classmethod
    def from_settings(cls, settings) -> ApiKeys | None:
        """The keys of SLIMSERVE_API_KEY or SLIMSERVE_API_KEY_FILE (not both), or None: no authentication."""
        if settings.api_key and settings.api_key_file:
            raise ValueError("set SLIMSERVE_API_KEY or SLIMSERVE_API_KEY_FILE, not both")
        if settings.api_key_file:
            try:
                text = Path(settings.api_key_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"SLIMSERVE_API_KEY_FILE {settings.api_key_file}: {exc.strerror}") from None
            keys = [line.strip() for line in text.splitlines() if line.strip()]
            if not keys:
                raise ValueError(f"SLIMSERVE_API_KEY_FILE {settings.api_key_file} holds no key")
            return cls(keys)
        return cls([settings.api_key.strip()]) if settings.api_key.strip() else None

    def check(self, environ: dict) -> None:
        if environ.get("PATH_INFO", "") in OPEN_PATHS:
            return
        offered = _offered(environ)
        if offered is None:
            raise Unauthorized("this server needs an API key: send Authorization: Bearer <key> or x-api-key: <key>")
        # Every key is compared (no early exit), so a match's position in the list does not show in the timing.
        candidate = _raw(offered)
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise Unauthorized("the API key is not valid")


def _raw(text: str) -> bytes:
    # WSGI servers hand headers over as latin-1 text (PEP 3333): encoding back gives the bytes sent.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # a server that decoded as UTF-8 instead
        return text.encode("utf-8", "surrogateescape")


def _offered(environ: dict) -> str | None:
    header = environ.get("HTTP_AUTHORIZATION")
    if header:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = environ.get("HTTP_X_API_KEY")
    return key.strip() if key and key.strip() else None
