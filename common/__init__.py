"""Shared by master and client: wire messages, framing, authentication, states, errors.

Nothing here imports gevent, so every layer (and any other client) can use it.
"""

PROTOCOL_VERSION = 3
