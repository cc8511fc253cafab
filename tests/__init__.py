"""Conveyor's test suite (see the README's Tests section)."""

import os

# gRPC's C core logs some connection events (a GOAWAY from a server that a test
# stopped) straight to the process's stderr, outside pytest's capture between tests;
# in a pytest-xdist worker they land in the middle of the progress dots. Errors only.
# Set before anything imports grpc: the core reads it once.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
