"""Host <-> GPU transfers that leave the GPU busy: a CUDA stream and pinned host buffers per concurrent call.

A run calls a model from several threads (:func:`~wsiseg.predictor.lanes_of`); several threads may drive
one GPU. On the default stream their work would queue one after the other: while one thread copies its
tiles in, or waits for its probabilities to come back, the GPU has nothing queued. With a stream per lane
(one per call running at once), a call's copies (in from pinned memory, out into pinned memory, both
``non_blocking``) run on the GPU's copy engines while another call's forward pass runs, and a thread waits
only for its lane's stream (an event), never for the whole device. (segment-anything's relative-position
lookup indexed GPU tables with CPU indices, a copy that waits for the stream; ``wsiseg.model.attention``
makes those indices on the device.)

Pinned (page-locked) memory is what makes a copy asynchronous (from pageable memory CUDA copies through a
staging buffer, holding the host thread) and about twice as fast. It is expensive to allocate, so each lane
keeps its buffers and grows them to the largest batch seen (a 32-tile batch of 1024 px: 100 MB in, plus the
probabilities out).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Lane:
    """A lane: a stream and pinned host buffers on one CUDA device, used by one call at a time."""

    device: torch.device
    stream: torch.cuda.Stream
    _buffers: dict[str, torch.Tensor] = field(default_factory=dict)

    def pinned(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A pinned host tensor of ``shape`` and ``dtype``: a view of the lane's buffer ``name``, grown
        when too small. Its contents are those of the last use: the caller fills or overwrites it."""
        size = int(np.prod(shape))
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < size:
            buffer = torch.empty(size, dtype=dtype, pin_memory=True)
            self._buffers[name] = buffer
        return buffer[:size].view(shape)


class Lanes:
    """The lanes of one CUDA ``device``, kept as long as the predictor: a call takes a free lane (a new one
    when none is free, so there are as many as calls ever ran at once) and gives it back (:meth:`take`).

    Lanes outlive the threads that use them, and must: a run starts new model threads, and the CUDA caching
    allocator reuses a freed block only on the stream it was allocated on, so a new stream per run would
    strand every run's activations on the device."""

    def __init__(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise ValueError(f"lanes are for CUDA devices, not {device}")
        self.device = device
        self.created = 0
        self._free: list[Lane] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def take(self) -> Iterator[Lane]:
        """A lane for this call alone, returned to the pool afterwards."""
        with self._lock:
            lane = self._free.pop() if self._free else None
        if lane is None:
            lane = self._new()
        try:
            yield lane
        finally:
            with self._lock:
                self._free.append(lane)

    def _new(self) -> Lane:
        """A new lane; its stream first waits for the work already queued on the device's current stream (the
        model's weights, copied there when it was built)."""
        stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with self._lock:
            self.created += 1
        return Lane(self.device, stream)
