"""``python -m mmstream.testing``: run the loopback test server until interrupted."""

from __future__ import annotations

import sys

from mmstream.testing._cli import main

if __name__ == "__main__":
    sys.exit(main())
