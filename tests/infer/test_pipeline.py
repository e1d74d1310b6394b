"""``run_pipeline``: several model replicas, batches consumed in order, a first batch read beforehand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from wsiseg.infer.pipeline import StageTimes, run_pipeline

SHAPE = (2, 2, 3)


def _read(tile: int, out: np.ndarray) -> None:
    out.fill(tile % 256)


Predict = Callable[[np.ndarray], np.ndarray]


def _replica(delay_s: float, calls: list[int], fail_at: int | None = None) -> Predict:
    def predict(tiles: np.ndarray) -> np.ndarray:
        first = int(tiles[0, 0, 0, 0])
        if fail_at is not None and first == fail_at:
            raise RuntimeError("replica failed")
        time.sleep(delay_s)
        calls.append(first)
        return tiles[:, None, :, :, 0].astype(np.float32)
    return predict


@pytest.mark.parametrize("n_replicas", [1, 2, 3])
def test_replicas_share_batches_and_consume_in_order(n_replicas: int) -> None:
    calls: list[list[int]] = [[] for _ in range(n_replicas)]
    # the first replica is slow: later batches overtake it, yet they are consumed in order
    replicas = [_replica(0.05 if i == 0 else 0.005, calls[i]) for i in range(n_replicas)]
    consumed: list[list[int]] = []
    run_pipeline(list(range(40)), _read, replicas, lambda b, p: consumed.append(b), tile_shape=SHAPE,
                 batch_size=4, read_workers=2, times=StageTimes())
    assert consumed == [list(range(i, i + 4)) for i in range(0, 40, 4)]
    assert sorted(c for replica in calls for c in replica) == list(range(0, 40, 4))
    if n_replicas > 1:
        assert all(calls), calls  # every replica predicted something


def test_first_batch_read_beforehand_is_not_read_again() -> None:
    read_tiles: list[int] = []
    lock = threading.Lock()

    def read(tile: int, out: np.ndarray) -> None:
        with lock:
            read_tiles.append(tile)
        _read(tile, out)

    first = np.stack([np.full(SHAPE, t, np.uint8) for t in range(3)])
    probs: list[np.ndarray] = []
    run_pipeline(list(range(7)), read, [_replica(0, [])], lambda b, p: probs.append(p), tile_shape=SHAPE,
                 batch_size=3, read_workers=1, times=StageTimes(), first_batch=first)
    assert sorted(read_tiles) == [3, 4, 5, 6]
    assert [int(p[0, 0, 0, 0]) for p in probs] == [0, 3, 6]
    with pytest.raises(ValueError, match="first batch"):
        run_pipeline(list(range(7)), read, [_replica(0, [])], lambda b, p: None, tile_shape=SHAPE,
                     batch_size=2, read_workers=1, times=StageTimes(), first_batch=first)


def test_a_failing_replica_stops_the_run_after_the_batches_before_it() -> None:
    consumed: list[int] = []
    replicas = [_replica(0.01, [], fail_at=20) for _ in range(2)]  # whichever takes batch 20 fails
    with pytest.raises(RuntimeError, match="replica failed"):
        run_pipeline(list(range(40)), _read, replicas, lambda b, p: consumed.append(b[0]), tile_shape=SHAPE,
                     batch_size=4, read_workers=2, times=StageTimes())
    assert consumed == list(range(0, len(consumed) * 4, 4)) and 20 not in consumed


def test_a_stalled_replica_does_not_let_the_others_run_ahead() -> None:
    """Batches predicted but not consumed stay bounded (2 per replica + 1) while one replica stalls."""
    lock = threading.Lock()
    state = {"predicted": 0, "consumed": 0, "peak": 0}
    stalled = threading.Event()

    def replica(stall_s: float) -> Predict:
        def predict(tiles: np.ndarray) -> np.ndarray:
            if stall_s and not stalled.is_set():
                stalled.set()
                time.sleep(stall_s)
            with lock:
                state["predicted"] += 1
                state["peak"] = max(state["peak"], state["predicted"] - state["consumed"])
            return tiles[:, None, :, :, 0].astype(np.float32)
        return predict

    def consume(batch: list[int], probs: np.ndarray) -> None:
        with lock:
            state["consumed"] += 1

    run_pipeline(list(range(400)), _read, [replica(0.5), replica(0.0)], consume, tile_shape=SHAPE,
                 batch_size=2, read_workers=2, times=StageTimes())
    assert state["consumed"] == 200 and state["peak"] <= 5, state


def test_model_occupancy_reads_where_the_idle_time_goes() -> None:
    """A slow reader (40 ms per batch) and a fast model (10 ms): the model idles between batches, ~30 ms
    each; two threads on a slow model with fast reads: the busy union is about half the summed model time;
    a slow consumer shows as ``wait_output``. (Bounds loose enough for a loaded machine: this checks the
    accounting, not speed.)"""
    def slow_read(tile: int, out: np.ndarray) -> None:
        time.sleep(0.01)  # 4 tiles per batch, one read worker: 40 ms per batch
        _read(tile, out)

    starved = StageTimes()
    run_pipeline(list(range(40)), slow_read, [_replica(0.01, [])], lambda b, p: None, tile_shape=SHAPE,
                 batch_size=4, read_workers=1, times=starved)
    assert 5 <= starved.idle_gaps <= 9  # 10 batches (a loaded machine may have the next one ready at times)
    assert starved.longest_idle_gap >= 0.015
    assert starved.longest_idle_gap <= starved.idle_between <= starved.wait_input + 0.05
    assert 0.09 <= starved.model_busy <= starved.infer + 0.01
    assert starved.first_batch >= 0.035  # the first batch's reads
    assert starved.wait_input >= 0.2

    busy = StageTimes()
    run_pipeline(list(range(80)), _read, [_replica(0.05, []), _replica(0.05, [])], lambda b, p: None,
                 tile_shape=SHAPE, batch_size=4, read_workers=2, times=busy)
    assert busy.infer >= 0.95  # 20 batches of 50 ms
    assert busy.model_busy <= 0.75 * busy.infer  # two threads at once: the union is about half

    held = StageTimes()
    run_pipeline(list(range(16)), _read, [_replica(0.0, [])], lambda b, p: time.sleep(0.05),
                 tile_shape=SHAPE, batch_size=2, read_workers=1, times=held)
    assert held.wait_output >= 0.1  # 8 batches of 50 ms to consume, at most 3 waiting
    assert set(held.as_dict()) >= {"model_busy", "idle_gaps", "idle_between", "longest_idle_gap",
                                   "first_batch", "wait_output"}
