"""Generated INVITEs thrown at the real unit in bursts: after every burst it is up, registered,
without ghost rows, and it places and takes a call.

The INVITEs come from `kiosk.lab.flood.invite_strategy` (hypothesis): missing,
repeated and enormous headers, odd content types and bodies, no SDP, broken
SDP, up to 40 m-lines, strange encodings; each burst goes at about 100 a
second from the trusted host (127.0.0.1) or an untrusted one (127.0.0.2),
with or without a CANCEL after each INVITE. Every host in them is on
loopback. The run is derandomized (the same examples every time); a failing
burst is also written to the test's tmp_path for replay with
`kiosk.lab.flood.burst`. The long run is `bench/fuzz.py --examples N --seed S`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kiosk.lab import flood  # noqa: E402

from .conftest import needs_lab  # noqa: E402

pytestmark = [needs_lab, pytest.mark.lab,
              pytest.mark.filterwarnings("ignore:Generating overly large repr")]

TRUSTED, UNTRUSTED = "127.0.0.1", "127.0.0.2"
EXAMPLES = int(os.environ.get("KIOSK_FUZZ_EXAMPLES", "6"))


def save_burst(path: Path, source: str, messages: list[bytes], cancel_after: float | None) -> None:
    path.write_text(json.dumps({"source": source, "cancel_after": cancel_after,
                                "messages": [m.decode("latin-1") for m in messages]}))


@pytest.mark.timeout(240)
def test_generated_invite_bursts_never_take_the_unit_down(unit_factory, phone, tmp_path) -> None:
    phone("2001")
    caller = phone("2002")
    unit = unit_factory()
    target = flood.unit_address(unit)
    senders = {src: flood.Flooder(target, src) for src in (TRUSTED, UNTRUSTED)}
    bursts = st.sampled_from(sorted(senders)).flatmap(
        lambda src: flood.burst_strategy(senders[src].host, senders[src].port, target).map(lambda b: (src, *b)))
    done = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
              phases=[Phase.explicit, Phase.generate],  # no shrinking: a dead unit fails every later example
              suppress_health_check=list(HealthCheck))
    @given(bursts)
    def throw(example: tuple[str, list[bytes], float | None]) -> None:
        source, messages, cancel_after = example
        result = senders[source].burst(messages, rate=100, cancel_after=cancel_after, settle=0.5)
        report = flood.serves(unit, "2001", caller)
        done.append((source, len(messages), result.summary()))
        if not report["ok"]:
            saved = tmp_path / f"failing-burst-{len(done)}.json"
            save_burst(saved, source, messages, cancel_after)
            raise AssertionError(f"after burst {len(done)} ({source}, {len(messages)} INVITEs, cancel {cancel_after}; "
                                 f"saved in {saved}): {report}\n{result.summary()}\n{unit.log_tail(40)}")

    try:
        throw()
    finally:
        for s in senders.values():
            s.close()
    assert len(done) >= min(EXAMPLES, 3), done
