"""The fuzz campaigns of bench/fuzz.py, bounded: 20,000 frames into each kind of port.

Each test brings up its lab and a real `pktchain node` (or `pktchain
tunnel`, or runs `pktchain fn` and `pktchain pipe write`), sends mutated
frames of every header the codec knows into one kind of port, and asserts
what the long campaigns assert (support.fuzz_campaigns): the process is
alive with no traceback, it received every frame sent, every frame is
accounted for by its counters, an established flow still passes, and its
resident memory does not grow while the first frames are sent again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pktchain.lab import Lab
from support.fuzz_campaigns import CAMPAIGNS, Report
from support.fuzz_streams import STREAM_CAMPAIGNS

pytestmark = pytest.mark.slow

FRAMES = 20_000
SEED = 20261207


def run(port_type: str, lab_factory: Callable[..., Lab], tmp_path: Path) -> Report:
    def make_lab(topology: dict[str, Any]) -> Lab:
        return lab_factory(topology)

    campaigns = {**CAMPAIGNS, **STREAM_CAMPAIGNS}
    with campaigns[port_type](make_lab, tmp_path, SEED) as campaign:
        report: Report = campaign.run(FRAMES)
    return report


@pytest.mark.parametrize("port_type", [*CAMPAIGNS, *STREAM_CAMPAIGNS])
def test_twenty_thousand_mutated_frames_leave_the_port_working_and_every_frame_counted(
    port_type: str, lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    report = run(port_type, lab_factory, tmp_path)
    assert report.ok, report.text()
    assert report.frames >= FRAMES
    assert report.delivered >= FRAMES - FRAMES // 10  # the rest: refused by design (see report)
    assert report.drops, "mutated frames that nothing dropped: the mutations did nothing"
