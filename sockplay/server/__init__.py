"""
The sockplay server: C{twistd -n sockplay} or C{python -m sockplay.server}.

L{sockplay.server.tap} assembles a server from the parts in this package
(see docs/architecture.md); a library user needs only the factory and its
settings, for example to serve on an endpoint of their own::

    endpoint.listen(EchoReplyFactory(ServerSettings(framing="line", keepOpen=True)))
"""

from sockplay.server.factory import EchoReplyFactory
from sockplay.server.protocol import ConnectionState, EchoReplyProtocol
from sockplay.server.settings import ServerSettings

__all__ = ["ConnectionState", "EchoReplyFactory", "EchoReplyProtocol", "ServerSettings"]
