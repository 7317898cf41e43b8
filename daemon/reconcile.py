"""Reconciliation: what the kernel says an operation did, asked of its plugin.

At start-up every history row left unfinished (``pending``, ``staged``) goes to its
plugin's ``reconcile`` (:func:`reconcile_at_start`); after a device hook raised,
the same question tells whether the step took effect anyway
(:func:`verdict_after_failure`), so the history never records a failure for an
update the firmware applied or staged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from livefw.device import Device
from livefw.errors import NotSupported
from livefw.history import History, HistoryEntry
from livefw.plugin import Plugin, Reconciliation
from livefw.state import HistoryState, UpdateState

__all__ = ["PluginOf", "reconcile_at_start", "staged_state", "verdict_after_failure"]

log = structlog.get_logger("livefw.engine")

#: the loaded plugin of a name, or None.
PluginOf = Callable[[str], Plugin | None]


def staged_state(device: Device) -> UpdateState:
    """What a device with a staged update waits for."""
    return UpdateState.NEEDS_REBOOT if "needs-reboot" in device.flags else UpdateState.PENDING


async def reconcile_at_start(
    history: History, plugin_of: PluginOf, devices: Mapping[str, Device], boot_id: str
) -> None:
    """Hand every unfinished row to its plugin and record its verdict.

    A row a plugin finds staged becomes ``staged``; "still waiting" (None) on a row
    the daemon never completed means every step was done: ``staged`` too; a plugin
    that cannot tell (NotSupported, or not loaded) leaves ``failed: interrupted``.
    The devices' UpdateState follows.
    """
    for entry in reversed(history.entries(unfinished=True)):
        boot_changed = entry.boot_id != boot_id
        plugin = plugin_of(entry.plugin)
        verdict: Reconciliation | None
        try:
            if plugin is None:
                raise NotSupported(f"the {entry.plugin} plugin is not loaded")
            verdict = await plugin.reconcile(entry, boot_changed)
        except NotSupported as error:
            verdict = Reconciliation(UpdateState.FAILED, f"interrupted: {error.message}")
        except Exception as error:
            log.exception("reconcile_failed", op_id=entry.op_id, plugin=entry.plugin)
            verdict = Reconciliation(UpdateState.FAILED, f"interrupted: {error!r}")
        if verdict is not None and verdict.state in (
            UpdateState.PENDING,
            UpdateState.NEEDS_REBOOT,
        ):
            # the plugin found the update staged (e.g. interrupted after staging)
            history.set_state(
                entry.op_id,
                HistoryState.STAGED,
                reason=verdict.reason or "staged",
                version_new=verdict.version or None,
                finished=False,
            )
            device = devices.get(entry.device_id)
            if device is not None:
                device.update(update_state=verdict.state, update_error="")
            continue
        if verdict is None:
            device = devices.get(entry.device_id)
            if entry.state == HistoryState.PENDING and entry.kind == "install":
                # every step was done before the daemon stopped: the update waits
                history.set_state(
                    entry.op_id,
                    HistoryState.STAGED,
                    reason="staged; the daemon stopped before it recorded so",
                    finished=False,
                )
            if device is not None:
                device.update(update_state=staged_state(device))
            continue
        history.set_state(
            entry.op_id,
            HistoryState.of(verdict.state),
            reason=verdict.reason,
            version_new=verdict.version or None,
        )
        log.info(
            "reconciled",
            op_id=entry.op_id,
            plugin=entry.plugin,
            state=str(verdict.state),
            reason=verdict.reason,
            boot_changed=boot_changed,
        )
        device = devices.get(entry.device_id)
        if device is not None:
            device.update(
                update_state=verdict.state,
                update_error="" if verdict.state == UpdateState.SUCCESS else verdict.reason,
            )
    # an interrupted activation does not undo the staging an older row owns
    for entry in history.entries(unfinished=True):
        device = devices.get(entry.device_id)
        if entry.state == HistoryState.STAGED and device is not None:
            device.update(update_state=staged_state(device))


async def verdict_after_failure(
    history: History, plugin_of: PluginOf, devices: Mapping[str, Device], entry: HistoryEntry
) -> Reconciliation | None:
    """What the kernel says an operation whose hook raised actually did.

    A hook can fail *after* its irreversible step took effect (a read-back or a
    re-scan failing, the device going away). The row is reconciled as after a
    crash (as :func:`reconcile_at_start` does) so the history does not record a
    failure for an update the firmware applied or staged. Returns the plugin's
    verdict when it tells success or a staged update, else None (the failure
    stands). The plugin's "still staged" answer (None) counts as staged.
    """
    plugin = plugin_of(entry.plugin)
    if plugin is None:
        return None
    try:
        verdict = await plugin.reconcile(history.get(entry.op_id), False)
    except Exception as error:
        log.debug("verdict_after_failure_unknown", op_id=entry.op_id, error=repr(error))
        return None
    if verdict is None:
        device = devices.get(entry.device_id)
        if device is None or entry.kind != "install":
            return None
        return Reconciliation(staged_state(device), "staged", "")
    if verdict.state in (UpdateState.SUCCESS, UpdateState.PENDING, UpdateState.NEEDS_REBOOT):
        return verdict
    return None
