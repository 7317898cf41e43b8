"""The generic ``_IOC`` encoding (include/uapi/asm-generic/ioctl.h).

x86_64 and arm64 both use it: ``dir << 30 | size << 16 | type << 8 | nr``.
"""

_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2


def ioc(direction: int, type_: int, nr: int, size: int) -> int:
    """Encode an ioctl request number."""
    return (direction << 30) | (size << 16) | (type_ << 8) | nr


def io(type_: int, nr: int) -> int:
    """``_IO(type, nr)``: no argument size in the number."""
    return ioc(_IOC_NONE, type_, nr, 0)


def iow(type_: int, nr: int, size: int) -> int:
    """``_IOW(type, nr, size)``: user space writes ``size`` bytes to the kernel."""
    return ioc(_IOC_WRITE, type_, nr, size)


def ior(type_: int, nr: int, size: int) -> int:
    """``_IOR(type, nr, size)``: the kernel writes ``size`` bytes back."""
    return ioc(_IOC_READ, type_, nr, size)


def iowr(type_: int, nr: int, size: int) -> int:
    """``_IOWR(type, nr, size)``."""
    return ioc(_IOC_READ | _IOC_WRITE, type_, nr, size)
