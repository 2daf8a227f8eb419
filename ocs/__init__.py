"""A real-time prepaid Online Charging System on Redis."""

from __future__ import annotations

__version__ = "0.1.0"
