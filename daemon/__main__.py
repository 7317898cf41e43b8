"""``python -m livefw`` runs the daemon (through livefw.launch, as ``livefwd`` does)."""

from livefw.launch import main

raise SystemExit(main())
