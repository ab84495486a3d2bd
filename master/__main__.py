"""``python -m master``: the same as ``corral-master``."""

from master.cli import main

raise SystemExit(main())
