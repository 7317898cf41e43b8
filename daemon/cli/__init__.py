"""The ``livefw`` command-line client."""
