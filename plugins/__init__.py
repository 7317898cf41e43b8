"""livefw plugins: one package per kernel technology (entry-point group ``livefw.plugins``)."""
