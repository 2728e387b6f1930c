"""
The playground (C{--web}): a page that shows, live, what the server does
with each connection's bytes, and a panel that sends a message through
sockplay's own client to one of the server's own listeners.

L{sockplay.playground.site} serves the page and its API,
L{sockplay.playground.stream} the live stream of events (Server-Sent
Events), and L{sockplay.playground.panel} the send panel. The
events come from L{sockplay.server.trace}.
"""
