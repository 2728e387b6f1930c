"""
Tests for L{sockplay.client}'s public surface.
"""

from __future__ import annotations

import sockplay.client


def test_publicNames() -> None:
    """
    Every name in C{__all__} is there, and is the one its module defines.
    """
    for name in sockplay.client.__all__:
        value = getattr(sockplay.client, name)
        assert value.__module__.startswith("sockplay.client."), name
