"""The bus layer: dbus-next service interfaces over the engine (translation only)."""
