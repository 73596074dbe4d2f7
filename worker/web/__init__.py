"""The faces on the network: the receiver for useapi.net's pushes (and its servers and their
limits), and the /metrics endpoint."""
