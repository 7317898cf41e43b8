"""Kernel uAPI definitions: one module per kernel header (structs, ioctl numbers, paths).

Every magic number cites the header it comes from. Request numbers are computed
with the generic ``_IOC`` encoding in :mod:`livefw.kernel.uapi.ioc` and pinned by a
golden test against the values in ``shared/spec/kernel-interfaces.md``.
"""
