"""
sockplay: a TCP request/reply ("echo-reply") server and client on Twisted.

Run the server with C{twistd -n sockplay} (or C{python -m sockplay.server})
and the client with C{python -m sockplay.client}.
"""

__version__ = "0.1.0"
