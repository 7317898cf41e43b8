"""PFRU capsules the simulated firmware accepts: built and signed the simulated way.

Simulated signature: the certificate data is ``LIVEFW-SIM-SIG`` plus a NUL, followed by the
SHA-256 of the monotonic count (u64 LE) and the payload bytes after the
authentication structure. Nothing in the daemon knows this rule; it exists only so
that the simulated firmware (livefw.kernel.sim.pfru) can refuse a corrupt capsule the
way real firmware does. :func:`build_capsule` makes the ``livefw sim sample`` capsules
and those of the tests, the bench and the VM lane.
"""

from __future__ import annotations

import hashlib
import struct

from livefw.kernel.uapi import capsule
from livefw.kernel.uapi import pfru as uapi

__all__ = [
    "SAMPLE_PAYLOAD_SIG",
    "SIM_SIGNATURE_MAGIC",
    "build_capsule",
    "sim_digest",
    "sim_signature",
]

#: simulated signature marker (see the module docstring).
SIM_SIGNATURE_MAGIC = b"LIVEFW-SIM-SIG\x00"
#: pfru_payload_hdr.sig the sample capsules carry; the kernel does not check it.
SAMPLE_PAYLOAD_SIG = 0x55524650  # "PFRU" little-endian


def sim_digest(monotonic_count: int, payload: bytes | memoryview) -> bytes:
    """What the simulated signature signs: SHA-256 of the count and the payload."""
    digest = hashlib.sha256(struct.pack("<Q", monotonic_count))
    digest.update(payload)  # not joined to the count first: a 32 MiB copy
    return digest.digest()


def sim_signature(monotonic_count: int, payload: bytes | memoryview) -> bytes:
    """The simulated firmware's signature over a payload (see the module docstring)."""
    return SIM_SIGNATURE_MAGIC + sim_digest(monotonic_count, payload)


def build_capsule(
    *,
    image_type: str,
    rt_ver: int,
    svn_ver: int,
    platform_id: str,
    header_version: int = 2,
    body_size: int = 1024,
    hw_ver: int = 1,
    monotonic_count: int = 1,
    no_payload_count: bool = False,
    image_size_extra: int = 0,
) -> bytes:
    """An FMP capsule carrying one PFRU payload, signed the simulated way.

    ``no_payload_count`` writes PayloadItemCount 0 and no ItemOffsetList (the image
    follows the 8-byte FMP header); ``image_size_extra`` makes the image header claim
    that many bytes more than the capsule holds.
    """
    payload_hdr = uapi.PayloadHeader(
        sig=SAMPLE_PAYLOAD_SIG,
        hdr_version=1,
        hdr_size=uapi.PAYLOAD_HDR.size,
        hw_ver=hw_ver,
        rt_ver=rt_ver,
        platform_id=platform_id,
        svn_ver=svn_ver,
    ).pack()
    body = bytes((index * 7 + rt_ver) & 0xFF for index in range(body_size))
    payload = payload_hdr + body
    auth = capsule.pack_image_auth(monotonic_count, sim_signature(monotonic_count, payload))
    image_data = auth + payload
    image_header = capsule.pack_fmp_image_header(
        header_version, image_type, len(image_data) + image_size_extra
    )
    header_size = capsule.CAPSULE_HEADER.size + 4  # a little slack, as real tools add
    if no_payload_count:
        fmp = capsule.pack_fmp_capsule_header([])
    else:
        fmp_size = capsule.FMP_CAPSULE_HEADER.size + 8
        fmp = capsule.pack_fmp_capsule_header([fmp_size])
    total = header_size + len(fmp) + len(image_header) + len(image_data)
    head = capsule.pack_capsule_header(
        capsule.FMP_CAPSULE_GUID,
        header_size,
        capsule.CAPSULE_FLAG_PERSIST_ACROSS_RESET,
        total,
    )
    return head + fmp + image_header + image_data
