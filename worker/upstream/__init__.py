"""The upstream, useapi.net: its URLs, the client (transport) and the meaning of its answers."""
