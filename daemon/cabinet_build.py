"""Cabinets written as vendors ship them: an AppStream metainfo and an MS-CAB archive.

For the tests, the bench, ``livefw remotes`` and whoever wants a cabinet for a
payload; :mod:`livefw.cabinet` reads them back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from livefw.cabinet import Requirement, load_cabarchive

__all__ = ["make_cabinet", "make_metainfo"]


def make_metainfo(
    *,
    appstream_id: str,
    guids: list[str] | tuple[str, ...],
    version: str,
    payload_name: str,
    payload: bytes,
    name: str = "",
    summary: str = "",
    vendor: str = "",
    protocol: str = "",
    version_format: str = "",
    description: str = "",
    requires: list[Requirement] | tuple[Requirement, ...] = (),
    timestamp: int = 0,
) -> bytes:
    """An AppStream firmware component for one payload (what vendors ship)."""
    from xml.etree.ElementTree import Element, SubElement, tostring

    component = Element("component", {"type": "firmware"})
    SubElement(component, "id").text = appstream_id
    SubElement(component, "name").text = name or appstream_id
    SubElement(component, "summary").text = summary or f"Firmware for {name or appstream_id}"
    if vendor:
        SubElement(component, "developer_name").text = vendor
    SubElement(component, "metadata_license").text = "CC0-1.0"
    SubElement(component, "project_license").text = "proprietary"
    provides = SubElement(component, "provides")
    for guid in guids:
        SubElement(provides, "firmware", {"type": "flashed"}).text = guid
    if requires:
        node = SubElement(component, "requires")
        for req in requires:
            attrs = {k: v for k, v in (("compare", req.compare), ("version", req.version)) if v}
            if req.depth:
                attrs["depth"] = req.depth
            child = SubElement(node, req.kind, attrs)
            if req.text:
                child.text = req.text
    releases = SubElement(component, "releases")
    release = SubElement(
        releases,
        "release",
        {"version": version, "timestamp": str(timestamp), "urgency": "medium"},
    )
    for kind in ("sha1", "sha256"):
        checksum = SubElement(
            release, "checksum", {"type": kind, "filename": payload_name, "target": "content"}
        )
        checksum.text = hashlib.new(kind, payload).hexdigest()
    SubElement(release, "size", {"type": "installed"}).text = str(len(payload))
    text = SubElement(SubElement(release, "description"), "p")
    text.text = description or f"Version {version}."
    custom = [("LVFS::UpdateProtocol", protocol), ("LVFS::VersionFormat", version_format)]
    if any(value for _, value in custom):
        node = SubElement(component, "custom")
        for key, value in custom:
            if value:
                SubElement(node, "value", {"key": key}).text = value
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(component) + b"\n"


def make_cabinet(files: Mapping[str, bytes], compress: bool = True) -> bytes:
    """An MS-CAB archive of flat ``files`` (MSZIP when ``compress``)."""
    cab = load_cabarchive()

    archive = cab.CabArchive()
    for name, data in files.items():
        archive[name] = cab.CabFile(data)
    return bytes(archive.save(compress=compress))
