"""Container healthcheck: exit 0 when the named service's gRPC health says SERVING.

    cookline-entrypoint healthcheck SERVICE [TIMEOUT_S]

It checks the service's own port (from COOKLINE_<SERVICE>_ADDR) on localhost.
"""

import sys

from cookline import channels, config

service = sys.argv[1]
port = config.address(service).rsplit(":", 1)[-1]
try:
    channels.wait_healthy(f"127.0.0.1:{port}", timeout=float(sys.argv[2]) if len(sys.argv) > 2 else 3.0)
except TimeoutError as exc:
    sys.exit(f"{service}: {exc}")
