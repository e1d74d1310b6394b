"""Host <-> GPU transfers that leave the GPU busy: one CUDA stream and pinned host buffers per model thread.

A run gives each model replica a thread of its own (:func:`~wsiseg.infer.pipeline.run_pipeline`); several
threads may drive one GPU ("lanes"). On the default stream their work would queue one after the other:
while one thread copies its tiles in, or waits for its probabilities to come back, the GPU has nothing
queued. With a stream per thread, a thread's copies (in from pinned memory, out into pinned memory, both
``non_blocking``) run on the GPU's copy engines while another thread's forward pass runs, and a thread waits
only for its own stream (an event), never for the device.

Pinned (page-locked) memory is what makes a copy asynchronous (from pageable memory CUDA copies through a
staging buffer, holding the host thread) and about twice as fast. It is expensive to allocate, so each lane
keeps its buffers and grows them to the largest batch seen (a 32-tile batch of 1024 px: 100 MB in, plus the
probabilities out).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Lane:
    """One thread's stream and pinned buffers on one CUDA device."""

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
    """The :class:`Lane` of each thread that uses a CUDA ``device`` (created on a thread's first use)."""

    def __init__(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise ValueError(f"lanes are for CUDA devices, not {device}")
        self.device = device
        self._local = threading.local()

    def current(self) -> Lane:
        """This thread's lane. Its stream first waits for the work already queued on the device's current
        stream (the model's weights, copied there when it was built)."""
        lane: Lane | None = getattr(self._local, "lane", None)
        if lane is None:
            stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
            stream.wait_stream(torch.cuda.current_stream(self.device))
            lane = Lane(self.device, stream)
            self._local.lane = lane
        return lane
