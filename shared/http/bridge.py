"""A request that arrives as a platform's own object (Azure Functions' HttpRequest) -> the WSGI app, with
werkzeug's public EnvironBuilder and Response.from_app: the one place this runtime builds an environ.
(API Gateway events go through serverless-wsgi; Cloud Functions hand over a real environ.)"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response


def call(app: Callable, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Response:
    """The app's whole answer (buffered), whatever its status: 5xx bodies and Retry-After included."""
    parts = urlsplit(url)
    headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}  # the body's own length rules
    builder = EnvironBuilder(
        path=parts.path or "/",
        base_url=f"{parts.scheme or 'https'}://{parts.netloc or 'localhost'}",
        query_string=parts.query,
        method=method,
        headers=headers,
        data=body,
    )
    try:
        return Response.from_app(app, builder.get_environ(), buffered=True)
    finally:
        builder.close()
