"""``python -m client``: the same as ``corral-client``."""

from client.cli import main

raise SystemExit(main())
