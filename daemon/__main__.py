"""``python -m livefw`` runs the daemon."""

from livefw.daemon import main

raise SystemExit(main())
