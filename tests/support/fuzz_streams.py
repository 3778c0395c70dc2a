"""Fuzz campaigns of the ports that take streams and datagrams (filled in below)."""

from __future__ import annotations

from typing import Any

STREAM_CAMPAIGNS: dict[str, Any] = {}
