# -*- coding: utf-8 -*-
# Copyright: livefw developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Options every livefw module shares: how to reach livefwd on the target."""

    DOCUMENTATION = r"""
options:
  bus_address:
    description:
      - D-Bus address of the bus livefwd is on (C(LIVEFW_BUS_ADDRESS) for the C(livefw) CLI).
      - Leave unset to use the system bus, where livefwd runs as a system service.
    type: str
  livefw_path:
    description:
      - The C(livefw) command on the target.
    type: str
    default: livefw
requirements:
  - the livefw package on the target (its C(livefw) CLI talks to livefwd)
notes:
  - The modules run the C(livefw) CLI with C(--json) on the target; errors carry livefw's
    message, its exit code (C(rc)) and the D-Bus error name (C(error)).
  - livefwd authorizes through polkit; run as root (C(become)) on real machines.
"""
