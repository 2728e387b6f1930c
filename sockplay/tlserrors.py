"""
What an OpenSSL error says, for the one-line messages of the client and
the server's log. Shared by both; imports nothing of sockplay's.
"""

from __future__ import annotations

__all__ = ["openSSLReasons"]


def openSSLReasons(error: BaseException | None) -> list[str]:
    """
    The reason strings of an C{OpenSSL.SSL.Error} (its queue of
    C{(library, function, reason)} entries), innermost last; the error's
    text where it holds no such queue.
    """
    queue = error.args[0] if error is not None and error.args else []
    if not isinstance(queue, list):
        return [str(error)]
    return [str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry]
