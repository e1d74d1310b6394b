"""Every device of one machine at once: one Dask worker process per device, slides assigned as they finish.

A local ``distributed.LocalCluster`` with one single-threaded worker process per device (Dask's own
convention, as dask-cuda's ``LocalCUDACluster`` has one worker per GPU); each worker is pinned to its
device and builds its own model replica there (:func:`pin_device`), and
:func:`~wsiseg.infer.cohort.cluster.run_cluster` hands out the slides. The scheduler queues no slide
on a busy worker (worker saturation 1.0): a worker takes the next slide when it finishes one, so a slow
slide holds no other up. CPU replicas (``cpu,cpu``) run the same path without a GPU, each with its share
of the cores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from wsiseg.errors import ConfigError, option

#: The device this worker process is pinned to (set by :func:`pin_device`), or None outside such workers.
_pinned: dict[str, str] = {}


def parse_devices(value: str) -> tuple[str, ...]:
    """``cuda:0,cuda:1`` / ``cpu,cpu`` / ``all`` (every CUDA device of this machine) -> device names.

    Raises ConfigError for an empty list, an unknown device kind, or ``all`` without CUDA devices."""
    if value.strip() == "all":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"{option('devices')} all: this machine has no CUDA device")
        return tuple(f"cuda:{i}" for i in range(n))
    devices = tuple(d.strip() for d in value.split(",") if d.strip())
    if not devices:
        raise ConfigError(f"{option('devices')} names no device")
    for device in devices:
        kind, _, index = device.partition(":")
        if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
            raise ConfigError(f"unknown device {device!r} in {option('devices')} (cpu, cuda:N, mps)")
    return devices


def pin_device(device: str, threads: int) -> str:
    """Run on a worker: this process's models go to ``device``, torch uses ``threads`` CPU threads."""
    _pinned["device"] = device
    import torch

    torch.set_num_threads(max(1, threads))
    return device


def pinned_device() -> str | None:
    """The device of this worker process, when it was pinned to one."""
    return _pinned.get("device")


class DeviceCluster:
    """A context manager: a local cluster with one pinned worker per device; ``client`` to submit to.

    ``threads``: torch threads per worker (default: this machine's cores shared out). Raises ConfigError
    when ``distributed`` is not installed."""

    def __init__(self, devices: Sequence[str], threads: int | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError(f"several devices ({option('devices')}) need dask.distributed: "
                              "pip install 'wsiseg[distributed]'") from None
        import dask

        self.devices = tuple(devices)
        with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):  # no slide queued behind one
            self._cluster = LocalCluster(n_workers=len(devices), threads_per_worker=1, processes=True,
                                         dashboard_address=None)
        self.client: Any = Client(self._cluster, set_as_default=False)
        workers = sorted(self.client.scheduler_info()["workers"])
        threads = threads or (os.cpu_count() or 1) // len(devices)
        for address, device in zip(workers, self.devices, strict=True):
            self.client.run(pin_device, device, threads, workers=[address])

    def __enter__(self) -> Any:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self._cluster.close()
