"""The corral master: a gevent TCP server that keeps the live node list, and its console."""
