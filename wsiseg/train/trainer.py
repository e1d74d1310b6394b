"""The training loop: AdamW, warm-up + step decays, gradient accumulation, autocast, per-epoch checkpoints.

Output folder (``out_dir``)::

    last.wsiseg     the model after the latest epoch (wsiseg.model's checkpoint format)
    best.wsiseg     the model of the epoch with the best validation micro Dice (last one without validation)
    last.state.pt   optimizer, scheduler, grad scaler, RNG states, epoch, history: what ``resume`` needs
                    (tensors and plain values only: it loads with ``torch.load(weights_only=True)``)
    metrics.jsonl, metrics.csv, curves.png   per-epoch records (see :mod:`wsiseg.train.log`)

``resume=True`` continues after the last completed epoch with the same model, optimizer, scheduler and RNG
state, so an interrupted run ends where an uninterrupted one would. Shuffling and augmentation draw from
generators seeded by ``(seed, epoch, sample)``, so results do not depend on the number of workers.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wsiseg.classes import ClassList
from wsiseg.errors import CheckpointError, ConfigError, OutputError, option
from wsiseg.model import (
    ModelConfig,
    ModelLayout,
    SamPath,
    build_from_checkpoint,
    load_pathology_weights,
    load_sam_weights,
    read_checkpoint,
    resolve_device,
    save_checkpoint,
    to_model_input,
)
from wsiseg.train import resume_state
from wsiseg.train.cache import EmbeddingCache
from wsiseg.train.config import Amp, ScheduleUnit, TrainConfig
from wsiseg.train.datasets import PatchDataset
from wsiseg.train.log import MetricsLog
from wsiseg.train.losses import SamPathLoss
from wsiseg.train.metrics import ConfusionMatrix, SegmentationScores
from wsiseg.train.schedule import build_scheduler
from wsiseg.train.transforms import (
    FEATURE_AUGMENTS,
    Augment,
    AugmentConfig,
    augment_features,
    augment_image,
    sample_generator,
)

STATE_FILE = "last.state.pt"


class _ImageSamples(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``(image float (3, P, P) in 0..1, label int64 (P, P))``, augmented when ``augment`` is given.

    Whole-image data sets are cropped from the image as it is (then resized to ``P``) when the
    augmentations include the resized crop, as the reference's RandomResizedCrop does."""

    def __init__(self, data: PatchDataset, augment: AugmentConfig | None, seed: int) -> None:
        self.data, self.augment, self.seed, self.epoch = data, augment, seed, 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        crop_source = (self.augment is not None and self.data.whole_image
                       and Augment.RESIZED_CROP in self.augment.augments)
        image, label = self.data.source(index) if crop_source else self.data[index]
        x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
        y = torch.from_numpy(np.array(label, dtype=np.int64))
        if self.augment is not None:
            x, y = augment_image(x, y, self.augment, sample_generator(self.seed, self.epoch, index),
                                 self.data.patch_size)
        return x, y


class _FeatureSamples(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``(features float32 (C, G, G), label int64 (P, P))`` from the embedding cache; flips/rot90 only."""

    def __init__(self, data: PatchDataset, cache: EmbeddingCache, augment: AugmentConfig | None,
                 seed: int) -> None:
        self.data, self.cache, self.seed, self.epoch = data, cache, seed, 0
        self.augment = (None if augment is None
                        else AugmentConfig(augments=augment.augments & FEATURE_AUGMENTS))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(self.cache.load(self.data, index).astype(np.float32))
        y = torch.from_numpy(self.data.label(index)).long()
        if self.augment is not None:
            x, y = augment_features(x, y, self.augment, sample_generator(self.seed, self.epoch, index))
        return x, y


@dataclass
class TrainResult:
    """Where the run wrote its models, and its per-epoch records."""

    out_dir: Path
    last: Path
    best: Path
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_record(self) -> dict[str, Any]:
        scored = [r for r in self.history if r.get("val_micro_dice") is not None]
        if not scored:
            return self.history[-1]
        return max(scored, key=lambda r: float(r["val_micro_dice"]))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(config: TrainConfig, num_classes: int) -> SamPath:
    """A fresh SAM-Path for ``config`` (seeded init; official SAM/HIPT weights loaded when given)."""
    mcfg = ModelConfig.from_preset(config.preset, num_classes, variant=config.variant,
                                   input_size=config.input_size, train_encoders=config.train_encoders,
                                   pathology_encoder=config.pathology_encoder, token_grid=config.token_grid)
    torch.manual_seed(config.seed)
    model = SamPath(mcfg)
    if config.sam_checkpoint:
        load_sam_weights(model, config.sam_checkpoint)
    if config.hipt_checkpoint:
        load_pathology_weights(model, config.hipt_checkpoint)
    return model


def _autocast_dtype(amp: Amp, device: torch.device) -> torch.dtype | None:
    if amp is Amp.OFF:
        return None
    if device.type == "cpu":
        if amp is Amp.FP16:
            raise ConfigError("amp fp16 needs a GPU; use bf16 or off on the CPU")
        return torch.bfloat16 if amp is Amp.BF16 else None
    if amp is Amp.AUTO:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16
    return torch.bfloat16 if amp is Amp.BF16 else torch.float16


class Trainer:
    """Trains a SAM-Path model on ``train_set`` and validates on ``val_set`` every epoch."""

    def __init__(self, config: TrainConfig, train_set: PatchDataset, val_set: PatchDataset | None = None,
                 *, progress: bool = True) -> None:
        if val_set is not None and len(val_set.classes) != len(train_set.classes):
            raise ConfigError("training and validation sets have different class lists")
        self.config = config
        self.train_set = train_set
        self.val_set = val_set if val_set is not None and len(val_set) else None
        self.classes: ClassList = train_set.classes
        self.progress = progress
        self.out_dir = Path(config.out_dir)
        self.device = resolve_device(config.device)
        self.amp_dtype = _autocast_dtype(config.amp, self.device)
        self.loss_fn = SamPathLoss(config.alpha, config.beta, ignore_index=self.classes.ignore_index)
        self.log = MetricsLog(self.out_dir)

    # -- data --------------------------------------------------------------------------------------
    def _loader(self, samples: Dataset[tuple[torch.Tensor, torch.Tensor]], *, shuffle: bool,
                epoch: int) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.config.seed * 7919 + epoch)
        return DataLoader(samples, batch_size=self.config.batch_size, shuffle=shuffle, generator=gen,
                          num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def _forward(self, model: SamPath, x: torch.Tensor, cached: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            if cached:
                return model.decode(x)
            tiles = x.mul(255.0).permute(0, 2, 3, 1)
            logits, iou = model(to_model_input(tiles, model.input_size, antialias=model.antialias_input))
            return logits, iou

    # -- the run -----------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train for ``config.epochs`` epochs (continuing a previous run in ``out_dir`` when ``resume``)."""
        cfg = self.config
        state_path = self.out_dir / STATE_FILE
        last_path, best_path = self.out_dir / "last.wsiseg", self.out_dir / "best.wsiseg"
        _seed_all(cfg.seed)
        state: dict[str, Any] | None = None
        if resume:
            state, model = self._load_resume(state_path, last_path)
        else:
            if state_path.exists():
                raise OutputError(f"{self.out_dir} already holds a training run; pass "
                                  f"{option('resume', flag=True)} to continue it or choose another "
                                  f"{option('out')}")
            model = build_model(cfg, len(self.classes))
        model.to(self.device)

        cache = EmbeddingCache(cfg.cache_embeddings, model) if cfg.cache_embeddings else None
        augment = cfg.augment_config if cfg.augment else None
        if cache is not None:
            cache.fill(self.train_set, device=self.device, batch_size=cfg.cache_batch_size,
                       progress=self.progress)
            if self.val_set is not None:
                cache.fill(self.val_set, device=self.device, batch_size=cfg.cache_batch_size,
                           progress=self.progress)
            train_samples: _ImageSamples | _FeatureSamples = _FeatureSamples(self.train_set, cache, augment,
                                                                             cfg.seed)
            val_samples: _ImageSamples | _FeatureSamples | None = (
                _FeatureSamples(self.val_set, cache, None, cfg.seed) if self.val_set is not None else None)
        else:
            train_samples = _ImageSamples(self.train_set, augment, cfg.seed)
            val_samples = _ImageSamples(self.val_set, None, cfg.seed) if self.val_set is not None else None

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        n_batches = math.ceil(len(self.train_set) / cfg.batch_size)
        steps_per_epoch = math.ceil(n_batches / cfg.accumulate)
        unit = steps_per_epoch if cfg.schedule_unit is ScheduleUnit.EPOCH else 1
        scheduler = build_scheduler(optimizer, warmup=cfg.warmup, milestones=cfg.milestones,
                                    gamma=cfg.lr_decay, steps_per_unit=unit)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)
        history: list[dict[str, Any]] = []
        start_epoch, best_score = 0, -math.inf
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            history, start_epoch, best_score = state["history"], state["epoch"], state["best_score"]
            resume_state.set_rng_state(state["rng"])

        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            train_samples.epoch = epoch
            record: dict[str, Any] = {"epoch": epoch + 1}
            record.update(self._train_epoch(model, train_samples, optimizer, scheduler, scaler, epoch,
                                            cache is not None))
            record["lr"] = optimizer.param_groups[0]["lr"]
            if val_samples is not None:
                record.update(self._validate(model, val_samples, cache is not None))
            record["epoch_seconds"] = time.perf_counter() - t0
            history.append(record)
            score = record.get("val_micro_dice")
            improved = score is None or (not math.isnan(score) and score > best_score)
            if score is not None and improved:
                best_score = float(score)
            self._save(model, last_path, epoch + 1, record)
            resume_state.write(state_path, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                               scaler=scaler.state_dict(), epoch=epoch + 1, best_score=best_score,
                               history=history, config=cfg.to_dict())
            if improved:
                shutil.copyfile(last_path, best_path)
            self.log.write(history)
            if self.progress:
                tqdm.write(_summary(record))
        if not last_path.exists():
            raise OutputError(f"{self.out_dir}: nothing was trained ({cfg.epochs} epochs were already done)")
        return TrainResult(self.out_dir, last_path, best_path, history)

    def _train_epoch(self, model: SamPath, samples: _ImageSamples | _FeatureSamples,
                     optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                     scaler: torch.amp.GradScaler, epoch: int, cached: bool) -> dict[str, float]:
        cfg = self.config
        model.train()
        loader = self._loader(samples, shuffle=True, epoch=epoch)
        sums = {"train_loss": 0.0, "train_dice_loss": 0.0, "train_focal_loss": 0.0, "train_iou_mse": 0.0}
        n_images, t0 = 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not self.progress,
                   leave=False)
        optimizer.zero_grad(set_to_none=True)
        n = len(loader)
        for i, (x, y) in enumerate(bar):
            y = y.to(self.device, non_blocking=True)
            logits, iou = self._forward(model, x, cached)
            terms = self.loss_fn(logits, iou, y)
            scaler.scale(terms.total / cfg.accumulate).backward()
            if (i + 1) % cfg.accumulate == 0 or i + 1 == n:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            b = int(y.shape[0])
            n_images += b
            for key, value in zip(sums, (terms.total, terms.dice, terms.focal, terms.iou_mse), strict=True):
                sums[key] += float(value.detach()) * b
            rate = n_images / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{sums['train_loss'] / n_images:.4f}", img_s=f"{rate:.1f}")
        out = {k: v / max(n_images, 1) for k, v in sums.items()}
        out["train_images_per_s"] = n_images / max(time.perf_counter() - t0, 1e-9)
        return out

    @torch.no_grad()
    def _validate(self, model: SamPath, samples: _ImageSamples | _FeatureSamples,
                  cached: bool) -> dict[str, Any]:
        model.eval()
        cm = ConfusionMatrix(self.classes)
        loss_sum, n_images = 0.0, 0
        for x, y in self._loader(samples, shuffle=False, epoch=0):
            y = y.to(self.device)
            logits, iou = self._forward(model, x, cached)
            loss_sum += float(self.loss_fn(logits, iou, y).total) * int(y.shape[0])
            n_images += int(y.shape[0])
            cm.update(model.class_probs(logits, (int(y.shape[-2]), int(y.shape[-1]))).argmax(1), y)
        scores: SegmentationScores = cm.scores()
        out: dict[str, Any] = {"val_loss": loss_sum / max(n_images, 1), "val_micro_dice": scores.micro_dice,
                               "val_micro_iou": scores.micro_iou, "val_macro_dice": scores.macro_dice,
                               "val_macro_iou": scores.macro_iou}
        for name, d in zip(scores.class_names, scores.dice, strict=True):
            out[f"val_dice_{name}"] = d
        return out

    def _save(self, model: SamPath, path: Path, epoch: int, record: dict[str, Any]) -> None:
        cfg = self.config
        mpp = cfg.mpp if cfg.mpp is not None else self.train_set.mpp
        training = {"epoch": epoch, "recipe": cfg.to_dict(), "dataset": self.train_set.name,
                    "train_patches": len(self.train_set),
                    "val_patches": len(self.val_set) if self.val_set is not None else 0,
                    "metrics": {k: v for k, v in record.items() if isinstance(v, int | float)}}
        save_checkpoint(model, path, classes=self.classes, mpp=mpp, tile_size=cfg.patch_size,
                        extra_provenance={"training": training})

    def _load_resume(self, state_path: Path, last_path: Path) -> tuple[dict[str, Any], SamPath]:
        if not state_path.is_file() or not last_path.is_file():
            raise CheckpointError(f"nothing to resume in {self.out_dir}: {STATE_FILE} or last.wsiseg missing")
        state = resume_state.read(state_path)
        data = read_checkpoint(last_path)
        if data.config.layout is not ModelLayout.REFERENCE:
            raise CheckpointError(f"{last_path} was trained by wsiseg 0.1 (model layout v1), whose loss this "
                                  f"version no longer computes; start a new run in another {option('out')}")
        if data.provenance.get("training", {}).get("epoch") != state["epoch"]:
            raise CheckpointError(f"{last_path} and {state_path} are from different epochs; cannot resume")
        if len(data.classes) != len(self.classes):
            raise CheckpointError(f"{last_path} has {len(data.classes)} classes, "
                                  f"the data set {len(self.classes)}")
        saved = {"pathology_encoder": None, "token_grid": "resize_input", **state["config"]}  # older runs
        for key in ("dataset", "preset", "variant", "pathology_encoder", "token_grid", "input_size",
                    "train_encoders", "batch_size", "accumulate", "seed", "patch_size"):
            if saved.get(key) != self.config.to_dict().get(key):
                raise ConfigError(f"cannot resume: {key} was {saved.get(key)!r} in the run, now "
                                  f"{self.config.to_dict().get(key)!r}")
        model = build_from_checkpoint(data, last_path, sam_checkpoint=self.config.sam_checkpoint,
                                      hipt_checkpoint=self.config.hipt_checkpoint)
        return state, model


def _summary(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.4f}"]
    if "val_micro_dice" in record:
        parts.append(f"val micro Dice {record['val_micro_dice']:.4f} IoU {record['val_micro_iou']:.4f}")
    parts.append(f"{record['epoch_seconds']:.1f} s")
    return " | ".join(parts)
