"""etcd's client URLs, as the command line and the configuration give them.

Kept apart from the client so that a configuration can be checked without
loading the client (requests, etcd3gw).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PORT", "parse_endpoints"]

DEFAULT_PORT = 2379
"""etcd's client port."""


def parse_endpoints(value: str | Sequence[str]) -> tuple[str, ...]:
    """Client URLs, given as a list or comma-separated (``http://10.0.0.1:2379,...``),
    checked and written ``scheme://host:port``; ValueError naming a bad one."""
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = [item.strip() for item in items if item.strip()]
    if not urls:
        raise ValueError(
            "no etcd endpoint given: expected URL[,URL...], e.g. http://127.0.0.1:2379"
        )
    checked: list[str] = []
    for url in urls:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"etcd endpoint {url!r}: {exc}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"etcd endpoint {url!r}: expected http://HOST:PORT or https://HOST:PORT"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"etcd endpoint {url!r}: expected no path, only scheme://HOST:PORT")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        normal = f"{parts.scheme}://{host}:{port or DEFAULT_PORT}"
        if normal not in checked:
            checked.append(normal)
    return tuple(checked)
