"""
The sockplay client: send a message to an echo-reply server and read its
reply, in any of the server's framings, over TCP, UNIX sockets or TLS.

L{request} does one exchange and L{probe} a run of them, as L{Options}
says; L{ReplyClientProtocol} (one message per connection) and
L{KeepOpenClientProtocol} (several on one) work over any endpoint. The
command, C{python -m sockplay.client}, is L{sockplay.client.command}.
"""

from sockplay.client.failures import ClientError, NoReply
from sockplay.client.options import Options
from sockplay.client.protocol import KeepOpenClientProtocol, ReplyClientProtocol
from sockplay.client.requests import ProbeResult, probe, request

__all__ = [
    "ClientError",
    "KeepOpenClientProtocol",
    "NoReply",
    "Options",
    "ProbeResult",
    "ReplyClientProtocol",
    "probe",
    "request",
]
