"""SAM-Path as a :class:`~wsiseg.predictor.Predictor` (RGB uint8 tiles in, class probabilities out);
loading it from a checkpoint."""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsiseg._version import __version__
from wsiseg.classes import ClassList
from wsiseg.errors import ConfigError
from wsiseg.io.hashing import file_sha256
from wsiseg.model.checkpoint import load_checkpoint
from wsiseg.model.cuda_lanes import Lanes
from wsiseg.model.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_model_input
from wsiseg.model.sam_path import SamPath


class Precision(str, enum.Enum):
    """Arithmetic used for the forward pass (autocast); probabilities are always returned as float32."""

    FP32 = "fp32"
    BF16 = "bf16"  #: CUDA, and CPU autocast
    FP16 = "fp16"  #: CUDA and MPS only


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda if available, else mps, else cpu; an unavailable device raises ConfigError."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available in this torch build")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} requested but MPS is not available")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return dev


#: Input pixels per logit of SAM's mask decoder (two stride-2 transposed convolutions on the 1/16 grid).
DECODER_STRIDE = 4


def native_output_stride(tile_size: int, input_size: int) -> int:
    """Tile pixels per logit when ``tile_size`` tiles are resized to the model's ``input_size``: the largest
    power of two dividing ``tile_size`` and at most ``DECODER_STRIDE * tile_size / input_size`` (>= 1)."""
    limit = DECODER_STRIDE * tile_size / input_size
    stride = 1
    while stride * 2 <= limit and tile_size % (stride * 2) == 0:
        stride *= 2
    return stride


class SamPathPredictor:
    """A :class:`~wsiseg.predictor.Predictor` around a :class:`SamPath` model (on ``device``, eval mode).

    Memory is bounded by the batch the caller passes to :meth:`predict`. ``output_stride`` is 4 for tiles
    of the model's input size: SAM-Path's logits are ``(S / 4, S / 4)``; asking :meth:`predict` for that
    size returns their softmax without any resizing.

    ``compile=True`` runs the model through ``torch.compile`` (fused kernels: ~25% more tiles/s on an H200
    for ``sam_path_vit_b`` in bf16, after about a minute of compilation on the first batch; worth it for
    thousands of tiles). Batches smaller than the first one are padded to its size, so the last batch of a
    slide does not compile again. The outputs are those of the eager model up to float rounding.

    On CUDA each call runs on a lane, a stream and pinned host buffers of its own while it runs
    (:mod:`wsiseg.model.cuda_lanes`): several threads on one GPU can overlap one's copies with another's
    forward pass. The outputs are the same as on the default stream. ``lanes`` (default: 2 on CUDA, else
    1) tells a run how many threads to call it from (:func:`wsiseg.predictor.lanes_of`); a compiled model
    compiles on the first call while the other threads wait.
    """

    def __init__(self, model: SamPath, classes: ClassList, *, mpp: float | None = None,
                 tile_size: int | None = None, device: str | torch.device = "auto",
                 precision: Precision | str = Precision.FP32,
                 normalization: dict[str, list[float]] | None = None,
                 provenance: dict[str, Any] | None = None, compile: bool = False,
                 lanes: int | None = None) -> None:
        classes.require_count(model.num_classes, "the model")
        self._device = resolve_device(device)
        try:
            self.precision = Precision(precision)
        except ValueError as exc:
            raise ConfigError(f"unknown precision {precision!r}; use fp32, bf16 or fp16") from exc
        if self.precision is Precision.FP16 and self._device.type == "cpu":
            raise ConfigError("fp16 needs a GPU (cuda or mps); use bf16 or fp32 on the CPU")
        if self.precision is Precision.BF16 and self._device.type == "mps":
            raise ConfigError("bf16 is not supported on mps; use fp16 or fp32")
        self.model = model.to(self._device).eval()
        self.classes = classes
        self.mpp = None if mpp is None else float(mpp)
        self.tile_size = int(tile_size) if tile_size else model.input_size
        self.output_stride = native_output_stride(self.tile_size, model.input_size)
        self.device = str(self._device)
        norm = normalization or {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        # made once: a tensor built from floats per batch would be a pageable copy waiting for the stream
        self._mean_on_device = torch.tensor([float(v) for v in norm["mean"]], device=self._device)
        self._std_on_device = torch.tensor([float(v) for v in norm["std"]], device=self._device)
        self._provenance = dict(provenance or {})
        self.compiled = bool(compile)
        self._forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = (
            torch.compile(self.model) if compile else self.model)
        self._batch = 0  # the compiled batch size (the first one seen)
        # CUDA: a stream and pinned buffers per call running at once (several threads may share one GPU)
        self._lanes = Lanes(self._device) if self._device.type == "cuda" else None
        if lanes is not None and lanes < 1:
            raise ConfigError(f"lanes must be at least 1, got {lanes}")
        self.lanes = lanes or (2 if self._lanes is not None else 1)
        self._compiling = threading.Lock()  # the first compiled call compiles; others wait for it
        self._compiled_once = False

    def predict(self, tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 RGB -> ``(N, k, s, s)`` float32 class probabilities (sum 1 over the k real
        classes): the softmax of the real classes' logits (the reference layout's "unlabeled" channel 0
        left out) resized bilinearly to ``s = out_size`` (default ``H``, the paper's full resolution)."""
        return self.predict_with_iou(tiles, out_size)[0]

    def predict_with_iou(self, tiles: np.ndarray,
                         out_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``(N, k, s, s)`` (``s = out_size``, default ``H x W``) and predicted IoUs ``(N, k)``,
        both float32."""
        ok = isinstance(tiles, np.ndarray) and tiles.dtype == np.uint8 and tiles.ndim == 4
        if not ok or tiles.shape[-1] != 3:
            desc = f"{tiles.dtype} {tiles.shape}" if isinstance(tiles, np.ndarray) else type(tiles).__name__
            raise ValueError(f"expected uint8 tiles of shape (N, H, W, 3), got {desc}")
        n, h, w, _ = tiles.shape
        if out_size is not None:
            if out_size <= 0:
                raise ValueError(f"output size must be positive, got {out_size}")
            h = w = int(out_size)
        k = self.model.num_classes
        if n == 0:
            return np.zeros((0, k, h, w), np.float32), np.zeros((0, k), np.float32)
        pixels = np.ascontiguousarray(tiles)
        if self.compiled and not self._compiled_once:
            with self._compiling:  # one thread compiles (and fixes the batch size), the others wait
                if not self._compiled_once:
                    out = self._predict_here(pixels, (h, w))
                    self._compiled_once = True
                    return out
        return self._predict_here(pixels, (h, w))

    def _predict_here(self, pixels: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_with_iou` of contiguous tiles (on a lane on CUDA)."""
        if self._lanes is not None:
            return self._predict_on_lane(pixels, size)
        if not pixels.flags.writeable:  # torch warns about (and may not guard) read-only memory: copy it
            pixels = pixels.copy()
        with torch.inference_mode():
            probs, iou = self._device_forward(torch.from_numpy(pixels).to(self._device), size)
            return (probs.cpu().numpy().astype(np.float32, copy=False),
                    iou.cpu().numpy().astype(np.float32, copy=False))

    def _device_forward(self, tiles: torch.Tensor,
                        size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(N, H, W, 3)`` tiles on the device -> probabilities ``(N, k, *size)`` and IoUs ``(N, k)``
        (float32, on the device; nothing waits for the device)."""
        n = tiles.shape[0]
        x = to_model_input(tiles, self.model.input_size, self._mean_on_device, self._std_on_device,
                           antialias=self.model.antialias_input)
        if self.compiled:
            self._batch = self._batch or n
            if n < self._batch:  # the compiled shape: pad, then drop the padding's outputs
                x = torch.cat([x, x.new_zeros((self._batch - n, *x.shape[1:]))])
        dtype = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}.get(self.precision)
        with torch.autocast(self._device.type, dtype=dtype, enabled=dtype is not None):
            logits, iou = self._forward(x)
        return self.model.class_probs(logits[:n], size), self.model.class_logits(iou[:n]).float()

    def _predict_on_lane(self, pixels: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_with_iou` on CUDA, on a lane of its own (:mod:`wsiseg.model.cuda_lanes`): tiles in
        through a pinned buffer, probabilities back into one, both copies asynchronous on the lane's stream;
        the thread then waits for that stream alone."""
        assert self._lanes is not None
        with self._lanes.take() as lane:
            with torch.inference_mode(), torch.cuda.stream(lane.stream):
                staged = lane.pinned("tiles", pixels.shape, torch.uint8)
                np.copyto(staged.numpy(), pixels)  # safe: the lane's last copy out of it has finished
                probs, iou = self._device_forward(staged.to(self._device, non_blocking=True), size)
                probs_host = lane.pinned("probs", tuple(probs.shape), probs.dtype)
                probs_host.copy_(probs, non_blocking=True)
                iou_host = lane.pinned("iou", tuple(iou.shape), iou.dtype)
                iou_host.copy_(iou, non_blocking=True)
                done = torch.cuda.Event()  # type: ignore[no-untyped-call]
                done.record(lane.stream)
            done.synchronize()
            # copies, made before the lane is free again: its buffers are refilled by its next call
            return probs_host.numpy().astype(np.float32), iou_host.numpy().astype(np.float32)

    def provenance(self) -> dict[str, Any]:
        """Model name, config, classes, base weight hashes, checkpoint hash, versions (JSON-serialisable)."""
        return {
            "model": "SamPath",
            "config": self.model.config.to_dict(),
            "classes": self.classes.names,
            "mpp": self.mpp,
            "tile_size": self.tile_size,
            "input_size": self.model.input_size,
            "output_stride": self.output_stride,
            "precision": self.precision.value,
            "compiled": self.compiled,
            "device": self.device,
            "base_weights": {k: dict(v) for k, v in self.model.base_weights.items()},
            "wsiseg_version": __version__,
            **self._provenance,
        }


def load_model(path: str | os.PathLike[str], device: str = "auto",
               sam_checkpoint: str | os.PathLike[str] | None = None,
               hipt_checkpoint: str | os.PathLike[str] | None = None, *,
               classes: ClassList | None = None,
               precision: Precision | str = Precision.FP32, compile: bool = False,
               lanes: int | None = None) -> SamPathPredictor:
    """Load a ``.wsiseg`` checkpoint as a ready :class:`~wsiseg.predictor.Predictor`.

    Slim checkpoints need the official SAM/HIPT files they were trained from (sha256-checked).
    ``classes`` (optional) must have the checkpoint's class count. ``lanes``: model threads a run may use
    (default 2 on CUDA, else 1; see :class:`SamPathPredictor`). Raises CheckpointError, ClassMismatchError
    or ConfigError (bad device/precision/lanes).
    """
    model, data = load_checkpoint(path, sam_checkpoint=sam_checkpoint, hipt_checkpoint=hipt_checkpoint,
                                  classes=classes)
    prov = {
        "checkpoint": {"file": Path(path).name, "sha256": file_sha256(path)},
        "trained": data.provenance,
    }
    return SamPathPredictor(model, data.classes, mpp=data.mpp, tile_size=data.tile_size, device=device,
                            precision=precision, normalization=data.normalization, provenance=prov,
                            compile=compile, lanes=lanes)
