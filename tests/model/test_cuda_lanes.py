"""The CUDA lane pool (``wsiseg.model.cuda_lanes.Lanes``): as many lanes as calls ever ran at once, kept
across threads and runs. CUDA streams are stood in for (no GPU here); the copies themselves are checked on a
GPU by ``benchmarks/check_cuda_lanes.py``."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from wsiseg.model import cuda_lanes


class _Stream:
    def __init__(self, device: torch.device) -> None:
        self.device, self.waited = device, False

    def wait_stream(self, other: object) -> None:
        self.waited = True


@pytest.fixture
def lanes(monkeypatch: pytest.MonkeyPatch) -> cuda_lanes.Lanes:
    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: object())
    return cuda_lanes.Lanes(torch.device("cuda:0"))


def test_sequential_calls_reuse_one_lane_from_any_thread(lanes: cuda_lanes.Lanes) -> None:
    seen: list[cuda_lanes.Lane] = []

    def call() -> None:
        with lanes.take() as lane:
            seen.append(lane)

    for _ in range(3):  # a new thread each time, as each run starts new model threads
        t = threading.Thread(target=call)
        t.start()
        t.join()
    assert lanes.created == 1 and seen[0] is seen[1] is seen[2]
    assert isinstance(seen[0].stream, _Stream) and seen[0].stream.waited  # waited for the weights' copies


def test_concurrent_calls_get_distinct_lanes_and_no_more(lanes: cuda_lanes.Lanes) -> None:
    inside = threading.Barrier(3)
    held: list[cuda_lanes.Lane] = []

    def call() -> None:
        with lanes.take() as lane:
            held.append(lane)
            inside.wait(timeout=5)  # all three hold a lane at once

    for _ in range(4):  # four runs of three threads each
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda _: call(), range(3)))
    assert lanes.created == 3
    assert len({id(lane) for lane in held}) == 3  # the same three lanes every run
    assert len(lanes._free) == 3


def test_lanes_are_for_cuda_only() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        cuda_lanes.Lanes(torch.device("cpu"))
