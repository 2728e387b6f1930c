"""
twistd dropin for sockplay: C{twistd -n sockplay --help}.

The module is named by string so that C{twistd --help} stays fast and an
import error in sockplay stays local to sockplay.
"""

from twisted.application.service import ServiceMaker

sockplay = ServiceMaker(
    "sockplay",
    "sockplay.server.tap",
    "A TCP echo-reply server: every message gets 'Message received: <message>' back.",
    "sockplay",
)
