"""Admission control of the call hub (issue 16 item 3, R-32): a node without measured headroom
for one more call refuses the next new room (503 with Retry-After over the API) while running
calls keep everything: the second party of an open room and a party rejoining its room are
always admitted. Real hub, real aiortc parties on loopback; the API test through the app."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from api.keys import CALL_HUB
from infra.cluster import OWNER_KEY
from media.call.admission import (
    Admission,
    AdmissionConfig,
    CallRefused,
    Headroom,
    Sample,
    estimate,
)
from media.call.client import CallClient
from media.call.node_cpu import InterpreterCpu, MachineCpu, NodeCpu, process_cpu_seconds
from testing.call_media import EncodedMedia, PrerecordedTrack
from tests.harness import Harness
from tests.media_call.conftest import CallRig

# -- the estimate ---------------------------------------------------------------------------------


def _samples(rooms: list[int], cores_per_call: float, loop_share: float = 0.5,
             interval: float = 0.5, lag: float = 0.0) -> list[Sample]:
    """A process whose calls each cost `cores_per_call` (half of it in the loop thread)."""
    out, cpu, loop_cpu = [], 0.0, 0.0
    for index, open_rooms in enumerate(rooms):
        out.append(Sample(index * interval, cpu, loop_cpu, open_rooms, lag))
        cpu += open_rooms * cores_per_call * interval
        loop_cpu += open_rooms * cores_per_call * loop_share * interval
    return out


def test_headroom_is_the_measured_cost_per_call_against_cores_times_target() -> None:
    config = AdmissionConfig(cores=2, target_utilisation=0.75, min_measured_seconds=2.0)
    samples = _samples([4] * 21, cores_per_call=0.1)  # 10 s of 4 calls at 0.1 core each

    fits = estimate(samples, 4, config)
    assert fits.admit and fits.reason == "fits"
    assert fits.cost_per_call == pytest.approx(0.1)
    assert fits.loop_cost_per_call == pytest.approx(0.05)
    assert fits.cpu == pytest.approx(0.4)
    assert fits.capacity == 1.5 and fits.loop_capacity == 0.75
    assert fits.calls_that_fit() in (14, 15)  # 1.5 / 0.1 and 0.75 / 0.05, rounded down

    # 13 calls open now (just admitted, not yet in the samples): 1.3 + 0.1 ≤ 1.5 fits; 15 not.
    assert estimate(samples, 13, config).admit
    full = estimate(samples, 15, config)
    assert not full.admit and full.reason.startswith("CPU 1.50 + 0.100")

    # The loop thread is full before the machine: it has one core whatever the cores.
    loop_bound = _samples([4] * 21, cores_per_call=0.1, loop_share=1.0)
    refused = estimate(loop_bound, 8, AdmissionConfig(cores=8, target_utilisation=0.75))
    assert not refused.admit and refused.reason.startswith("event loop thread and its workers")


def test_a_lagging_loop_refuses_and_no_call_or_no_measurement_admits() -> None:
    config = AdmissionConfig(cores=2, max_loop_lag=0.1)
    lagging = _samples([2] * 21, cores_per_call=0.01, lag=0.3)
    assert not estimate(lagging, 2, config).admit
    assert "event loop lags 300 ms" in estimate(lagging, 2, config).reason
    # Nothing open: nothing to protect.
    assert estimate(lagging, 0, config).admit
    # Under two seconds of a call measured: admitted (no measurement yet).
    short = _samples([1] * 4, cores_per_call=5.0)
    unmeasured = estimate(short, 1, config)
    assert unmeasured == Headroom(True, "no call measured yet", 1, 1.5, unmeasured.cpu, None,
                                  0.75, unmeasured.loop_cpu, None, 0.0)
    assert unmeasured.cpu == pytest.approx(5.0) and unmeasured.loop_cpu == pytest.approx(2.5)
    # The idle time before a call never counts as the call's cost.
    idle_then_call = _samples([0] * 10 + [1] * 9, cores_per_call=0.2)
    assert estimate(idle_then_call, 1, config).cost_per_call == pytest.approx(0.2)


def test_the_admission_remembers_a_measured_cost_after_its_window() -> None:
    now = [0.0]
    cpu = [0.0]
    rooms = [1]
    admission = Admission(AdmissionConfig(cores=1, target_utilisation=1.0, window_seconds=10),
                          rooms=lambda: rooms[0], clock=lambda: now[0], cpu=lambda: cpu[0],
                          loop_cpu=lambda: cpu[0] / 2)
    for _ in range(10):  # 5 s of one call at 0.3 core
        admission.record()
        now[0] += 0.5
        cpu[0] += 0.15
    assert admission.headroom().cost_per_call == pytest.approx(0.3)
    rooms[0] = 0
    for _ in range(40):  # 20 s without calls: the window holds none
        admission.record()
        now[0] += 0.5
    rooms[0] = 3  # three rooms opened at once: 0.9 + 0.3 > 1.0
    with pytest.raises(CallRefused) as refused:
        admission.check()
    assert refused.value.headroom.cost_per_call == pytest.approx(0.3)
    assert refused.value.retry_after == 10 and admission.refused == 1


def test_a_busy_presence_child_makes_the_node_refuse() -> None:
    """The node's CPU is the hub's process and its helper processes: four calls costing 0.1
    core each in the process fit 2 cores × 0.75 with room to spare — until the presence child
    works 0.25 core per call too (1.4 + 0.35 > 1.5). The same process figures without the
    child counted would admit. A restarted child (new pid) adds to what the old one used."""
    now, own, rooms = [0.0], [0.0], [4]
    child = {4242: 0.0}
    node = NodeCpu(own=lambda: own[0], read=child.get)
    node.add_helper(lambda: max(child))  # the newest child's pid
    blind = NodeCpu(own=lambda: own[0], read=child.get)  # the same process, child not counted
    config = AdmissionConfig(cores=2, target_utilisation=0.75, window_seconds=10)
    counted, not_counted = (
        Admission(config, rooms=lambda: rooms[0], clock=lambda: now[0], cpu=cpu,
                  loop_cpu=lambda: own[0] / 4) for cpu in (node, blind))

    def run(seconds: float, child_cores_per_call: float) -> None:
        for _ in range(int(seconds / 0.5)):
            for admission in (counted, not_counted):
                admission.record()
            now[0] += 0.5
            own[0] += rooms[0] * 0.1 * 0.5
            newest = max(child)
            child[newest] += rooms[0] * child_cores_per_call * 0.5

    run(10, 0.0)  # the child idle: 0.1 core per call
    assert counted.check().cost_per_call == pytest.approx(0.1, abs=0.01)
    run(12, 0.25)  # the child busy: the window holds only the busy time
    headroom = counted.headroom()
    assert headroom.cost_per_call == pytest.approx(0.35, abs=0.02)
    with pytest.raises(CallRefused) as refused:
        counted.check()
    assert refused.value.headroom.reason.startswith("CPU 1.4")
    assert not_counted.check().admit  # blind to the child: 0.4 + 0.1 ≤ 1.5

    before = node()
    child[4343] = 0.0  # the child died and was restarted: its CPU starts again from zero
    assert node() == pytest.approx(before)
    child[4343] = 0.5
    assert node() == pytest.approx(before + 0.5)


def test_a_node_sharing_its_machine_counts_what_other_processes_take() -> None:
    """With count_machine, "in use now" is what every process on the node's cores uses: four
    calls of 0.1 core fit 2 cores × 0.75 — unless other work keeps the machine at 1.6 cores.
    A call's cost is still the hub's own (0.1), not the machine's."""
    def samples(machine_cores: float) -> list[Sample]:
        out = _samples([4] * 21, cores_per_call=0.1)
        return [Sample(s.at, s.cpu, s.loop_cpu, s.rooms, s.lag, s.at * machine_cores)
                for s in out]

    shared = AdmissionConfig(cores=2, target_utilisation=0.75, count_machine=True)
    busy = estimate(samples(1.6), 4, shared)
    assert not busy.admit and busy.reason.startswith("CPU 1.60 + 0.100")
    assert busy.cost_per_call == pytest.approx(0.1)
    assert estimate(samples(0.9), 4, shared).admit  # others take 0.5: 0.9 + 0.1 fits
    alone = AdmissionConfig(cores=2, target_utilisation=0.75)  # the default: blind to others
    assert estimate(samples(1.6), 4, alone).admit
    machine = MachineCpu()
    first = machine()
    assert machine() >= first > 0  # cumulative busy seconds


def test_the_interpreter_counts_the_listening_threads_beside_the_loop() -> None:
    """Worker threads that run Python beside the loop (audio-listener, spoken-answers,
    video-sampler) are counted with the loop's thread; other threads are not; a thread that
    ended keeps what it used (the pools' threads live long: they are read while they run)."""
    release = threading.Event()

    def work(burnt: threading.Event) -> None:
        end = time.thread_time() + 0.15
        while time.thread_time() < end:
            pass
        burnt.set()
        release.wait(10)

    interpreter = InterpreterCpu()
    base = interpreter.workers()
    threads = []
    for name in ("audio-listener_0", "spoken-answers_0", "someone-else"):
        burnt = threading.Event()
        threads.append((threading.Thread(target=work, args=(burnt,), name=name), burnt))
        threads[-1][0].start()
    try:
        for _, burnt in threads:
            assert burnt.wait(10)
        running = interpreter.workers()
        assert 0.3 <= running - base < 0.3 + 0.05  # the listeners', not someone-else's
    finally:
        release.set()
        for thread, _ in threads:
            thread.join()
    assert interpreter.workers() == pytest.approx(running, abs=0.01)  # ended, still counted
    assert interpreter() >= running  # plus this (the loop's) thread


def test_a_helper_process_cpu_is_read_from_proc() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nend = time.process_time() + 0.3\n"
         "while time.process_time() < end: pass\nprint('done', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"done\n"
        used = process_cpu_seconds(child.pid)
        assert used is not None and used >= 0.25
    finally:
        child.kill()
        child.wait()
    assert process_cpu_seconds(child.pid) is None


# -- the hub, real parties ------------------------------------------------------------------------

TINY = AdmissionConfig(cores=0.001, target_utilisation=1.0, sample_interval=0.1,
                       min_measured_seconds=0.5, retry_after_seconds=7)


async def _until(check: Callable[[], Any], what: str, seconds: float = 30) -> Any:
    for _ in range(int(seconds * 10)):
        if result := check():
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_full_hub_refuses_a_new_room_but_not_the_open_rooms_parties(
    make_rig: Callable[..., CallRig],
) -> None:
    rig = make_rig(admission=TINY)
    first = await rig.join("customer", "s-open")
    measured = await _until(lambda: (h := rig.hub.headroom()) and h.cost_per_call and h,
                            "one call measured")
    assert measured.cost_per_call > 0.001 and not measured.admit

    with pytest.raises(CallRefused) as refused:
        await rig.join("customer", "s-new")
    assert refused.value.retry_after == 7
    assert not rig.hub.has_room("s-new")
    assert rig.hub.room_ids() == ["s-open"]

    # The open room's second party, and the first party rejoining, are admitted.
    await rig.join("agent", "s-open")
    await first.close()
    await rig.join("customer", "s-open")
    assert await _until(lambda: rig.hub.connected_roles("s-open") == {"customer", "agent"},
                        "both parties connected")
    with pytest.raises(CallRefused):
        await rig.join("agent", "s-new")
    assert rig.hub.admission is not None and rig.hub.admission.refused == 2


async def test_without_admission_config_every_room_is_admitted(
    make_rig: Callable[..., CallRig],
) -> None:
    rig = make_rig()
    await rig.join("customer", "s-a")
    await rig.join("customer", "s-b")
    assert rig.hub.headroom() is None
    assert sorted(rig.hub.room_ids()) == ["s-a", "s-b"]


# -- over the API ---------------------------------------------------------------------------------


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"call_admission_cores": 0.001, "call_admission_target_utilisation": 1.0,
            "call_admission_retry_after_seconds": 7}


def _client(media: EncodedMedia) -> CallClient:
    return CallClient(audio=PrerecordedTrack(media, "audio"),
                      video=PrerecordedTrack(media, "video"))


def _signal(harness: Harness, path: str, token: str, answers: list[Any]) -> Callable[
        [str, str], Awaitable[tuple[str, str]]]:
    async def signal(sdp: str, type_: str) -> tuple[str, str]:
        r = await harness.request("POST", path, token=token, json={"sdp": sdp, "type": type_})
        answers.append(r)
        if r.status != 200:
            raise RuntimeError(f"refused {r.status}")
        return r.body["sdp"], r.body["type"]

    return signal


@pytest.mark.one_database
@pytest.mark.timeout(300)
async def test_a_new_call_on_a_full_node_is_503_with_retry_after(
    harness: Harness, party_media: dict[str, EncodedMedia],
) -> None:
    open_walk = await harness.walk_to("in_call")
    new_walk = await harness.walk_to("in_call")
    open_sid, new_sid = open_walk.session_id, new_walk.session_id
    agent_token = await harness.login("agent01")
    hub = harness.app[CALL_HUB]
    clients: list[CallClient] = []
    answers: list[Any] = []

    async def join(sid: str, role: str, token: str, media: EncodedMedia) -> CallClient:
        client = _client(media)
        clients.append(client)
        await client.connect(_signal(harness, f"/calls/{sid}/{role}/offer", token, answers))
        return client

    try:
        customer = await join(open_sid, "customer", open_walk.customer_token,
                              party_media["customer"])
        await customer.wait_open()
        await _until(lambda: (h := hub.headroom()) and h.cost_per_call, "one call measured")

        with pytest.raises(RuntimeError, match="refused 503"):
            await join(new_sid, "customer", new_walk.customer_token, party_media["customer"])
        refused = answers[-1]
        assert refused.headers["Retry-After"] == "7"
        assert refused.body["code"] == "call_capacity_full"
        assert refused.body["detail"] == "当前线路繁忙，请稍后重试"
        assert refused.body["retry_after"] == 7
        assert not hub.has_room(new_sid)
        # The claim on the session is given up: another node may open the call.
        assert await harness.redis.get(OWNER_KEY + new_sid) is None
        with pytest.raises(RuntimeError, match="refused 503"):
            await join(new_sid, "agent", agent_token, party_media["agent"])

        # The open call's agent, and its customer rejoining, are admitted.
        agent = await join(open_sid, "agent", agent_token, party_media["agent"])
        await agent.wait_open()
        await customer.close()
        again = await join(open_sid, "customer", open_walk.customer_token,
                           party_media["customer"])
        await again.wait_open()
        assert [r.status for r in answers] == [200, 503, 503, 200, 200]
        assert await _until(lambda: hub.connected_roles(open_sid) == {"customer", "agent"},
                            "both parties of the open call")
    finally:
        for client in clients:
            await client.close()


def test_the_settings_name_whether_the_whole_machine_counts(tmp_path: Path) -> None:
    """SHUANGLU_CALL_ADMISSION_COUNT_MACHINE reaches the hub's admission control (issue 16)."""
    from infra.call_rooms import call_admission
    from infra.config import Settings

    shared = call_admission(Settings(profile="test", data_dir=tmp_path,
                                     call_admission_count_machine=True))
    alone = call_admission(Settings(profile="test", data_dir=tmp_path))
    assert shared is not None and shared.count_machine
    assert alone is not None and not alone.count_machine
