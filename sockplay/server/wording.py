"""
How the server's log lines count things: C{1 connection}, C{2 connections}.
"""

from __future__ import annotations

__all__ = ["counted"]


def counted(count: int, noun: str) -> str:
    """
    C{count} and C{noun}, plural unless C{count} is 1: C{"1 message"},
    C{"0 messages"}, C{"2 messages"}.
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
