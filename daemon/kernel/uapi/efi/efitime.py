"""EFI_TIME (UEFI 2.10 §8.3 "Time Services"): the stamp in UPDATE_INFO and capsule results."""

from __future__ import annotations

import struct

from livefw.record import Frozen

__all__ = [
    "EFI_TIME",
    "EFI_UNSPECIFIED_TIMEZONE",
    "EfiTime",
]

EFI_TIME = struct.Struct("<HBBBBBxIhBx")
EFI_UNSPECIFIED_TIMEZONE = 0x07FF


class EfiTime(Frozen):
    """EFI_TIME (16 bytes); all zero means "never"."""

    _FIELDS = (
        "year",
        "month",
        "day",
        "hour",
        "minute",
        "second",
        "nanosecond",
        "timezone",
        "daylight",
    )
    year: int = 0
    month: int = 0
    day: int = 0
    hour: int = 0
    minute: int = 0
    second: int = 0
    nanosecond: int = 0
    timezone: int = 0
    daylight: int = 0

    def __init__(
        self,
        year: int = 0,
        month: int = 0,
        day: int = 0,
        hour: int = 0,
        minute: int = 0,
        second: int = 0,
        nanosecond: int = 0,
        timezone: int = 0,
        daylight: int = 0,
    ) -> None:
        _set = object.__setattr__
        _set(self, "year", year)
        _set(self, "month", month)
        _set(self, "day", day)
        _set(self, "hour", hour)
        _set(self, "minute", minute)
        _set(self, "second", second)
        _set(self, "nanosecond", nanosecond)
        _set(self, "timezone", timezone)
        _set(self, "daylight", daylight)

    def pack(self) -> bytes:
        """16 bytes."""
        return EFI_TIME.pack(
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.nanosecond,
            self.timezone,
            self.daylight,
        )

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> EfiTime:
        """Decode 16 bytes at ``offset``."""
        return cls(*EFI_TIME.unpack_from(data, offset))

    @property
    def is_zero(self) -> bool:
        """Never stamped."""
        return self == EfiTime()

    def text(self) -> str:
        """ISO-like text (``UTC`` when the time zone is unspecified)."""
        stamp = (
            f"{self.year:04d}-{self.month:02d}-{self.day:02d} "
            f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}"
        )
        if self.timezone == EFI_UNSPECIFIED_TIMEZONE:
            return stamp + " (local time)"
        return f"{stamp} UTC{-self.timezone:+d}min" if self.timezone else stamp + " UTC"
