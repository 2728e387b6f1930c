"""
twistd dropin for sockplay: C{twistd -n sockplay --help}.

The module is named by string so that C{twistd --help} stays fast and an
import error in sockplay stays local to sockplay.
"""

from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

sockplay = ServiceMaker(
    "sockplay",
    "sockplay.server.tap",
    "A TCP echo-reply server: every message gets 'Message received: <message>' back.",
    "sockplay",
)

sockplayReactor = Reactor(
    "sockplay",
    "sockplay.server.reactor",
    "Twisted's epoll reactor with less work per event (Linux): sockplay's default.",
)
