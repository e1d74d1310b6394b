"""Cluster mode of ``segment_slides`` / ``wsiseg segment --scheduler`` on a two-process LocalCluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from distributed import LocalCluster

from wsiseg.cli import main
from wsiseg.errors import ConfigError
from wsiseg.infer import CohortResult, ModelSpec, open_segmentation, segment_slide, segment_slides
from wsiseg.synthetic import SYNTHETIC_CLASSES, SlideLayout, write_synthetic_slide

from .conftest import CountingModel

#: analysis resolution (um/px) and tile side (px) of these tests: 1500 px at 0.5 um/px -> 375 px
MPP, TILE = 2.0, 128


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """Address of a LocalCluster with two single-threaded worker processes (shared by the module)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield str(cluster.scheduler_address)


@pytest.fixture(scope="module")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small synthetic slides (SVS, TIFF) and one corrupt file, in sorted order a, b, c."""
    root = tmp_path_factory.mktemp("cluster-slides")
    write_synthetic_slide(root / "a.svs", 1500, 1500, mpp=0.5, seed=11)
    write_synthetic_slide(root / "b.tiff", 1500, 1200, mpp=0.5, layout=SlideLayout.TIFF, seed=12)
    (root / "c_corrupt.svs").write_bytes(b"not a slide at all")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-contained tiny SAM-Path checkpoint with random weights (5 classes, 2 um/px, 128 px tiles)."""
    import torch

    from wsiseg.model.checkpoint import save_checkpoint
    from wsiseg.model.sam_path import ModelConfig, SamPath

    torch.manual_seed(0)
    torch.set_num_threads(1)  # what the workers use (the nanny sets OMP_NUM_THREADS=1): same float sums
    model = SamPath(ModelConfig.from_preset("tiny", len(SYNTHETIC_CLASSES), input_size=64))
    path = tmp_path_factory.mktemp("cluster-ckpt") / "tiny.wsiseg"
    return save_checkpoint(model, path, classes=SYNTHETIC_CLASSES, mpp=MPP, tile_size=TILE,
                           self_contained=True)


def _slides(slide_dir: Path) -> list[Path]:
    return sorted(slide_dir.iterdir())


def _arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    seg = open_segmentation(path)
    return np.asarray(seg.probs[0][...]), np.asarray(seg.labels[0][...])


def test_cluster_run_matches_local_run_and_a_corrupt_slide_fails_alone(
        scheduler: str, slide_dir: Path, checkpoint: Path, tmp_path: Path) -> None:
    spec = ModelSpec(checkpoint, "cpu")
    slides = _slides(slide_dir)
    local = segment_slides(slides, spec, tmp_path / "local", single=False, progress=False, batch_size=2)
    cluster = segment_slides(slides, spec, tmp_path / "cluster", single=False, scheduler=scheduler,
                             progress=False, batch_size=2, geojson=tmp_path / "gj")
    for batch in (local, cluster):
        assert isinstance(batch, CohortResult) and not batch.ok
        assert [r.slide.name for r in batch.results] == ["a.svs", "b.tiff"]
        assert [(p.name, m.count("\n")) for p, m in batch.failures] == [("c_corrupt.svs", 0)]
        assert batch.n_tiles == sum(r.n_tiles for r in batch.results) > 0
    assert cluster.failures[0][1] == local.failures[0][1] and "c_corrupt.svs" in cluster.failures[0][1]
    assert all(r.out.is_absolute() for r in cluster.results)
    for name in ("a", "b"):
        probs_l, labels_l = _arrays(tmp_path / "local" / f"{name}.zarr")
        probs_c, labels_c = _arrays(tmp_path / "cluster" / f"{name}.zarr")
        assert (labels_c > 0).any() and len(np.unique(labels_c)) > 2  # a real (random-weight) model output
        assert probs_c.tobytes() == probs_l.tobytes() and labels_c.tobytes() == labels_l.tobytes()
        assert (tmp_path / "gj" / f"{name}.geojson").is_file()
    assert not (tmp_path / "cluster" / "c_corrupt.zarr").exists()


def test_cli_cluster_end_to_end_with_relative_paths(scheduler: str, slide_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").symlink_to(slide_dir)
    monkeypatch.chdir(tmp_path)  # the workers' working directory stays elsewhere: paths must go absolute
    args = ["segment", "in", "--scheduler", scheduler, "--model", "null", "--mpp", str(MPP),
            "--tile-size", str(TILE), "--out", "outs", "--quiet"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith("wsiseg: error: ")]
    assert len(err.splitlines()) == 1 and "c_corrupt.svs" in err
    assert "3 slides: 2 done, 0 resumed, 0 skipped (finished), 1 failed" in out
    assert "failed: c_corrupt.svs" in out and out.count("\n") == 1
    for name in ("a", "b"):
        seg = open_segmentation(tmp_path / "outs" / f"{name}.zarr")
        assert seg.finished and seg.metadata.params["tile_size"] == TILE


def test_cluster_run_resumes_an_interrupted_slide(scheduler: str, slide_dir: Path, tmp_path: Path) -> None:
    spec = ModelSpec("null", mpp=MPP, tile_size=TILE)
    slide = slide_dir / "a.svs"
    out = tmp_path / "outs"
    crashing = CountingModel(spec.build(), fail_on=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_slide(slide, crashing, out / "a.zarr", progress=False, batch_size=2, overlap=0)
    batch = segment_slides([slide], spec, out, single=False, scheduler=scheduler, progress=False,
                           batch_size=2, overlap=0)
    (result,) = batch.results
    assert batch.ok and result.resumed and 0 < result.n_predicted < result.n_tiles
    assert open_segmentation(out / "a.zarr").finished


def test_built_model_with_a_scheduler_is_a_config_error(slide_dir: Path, tmp_path: Path) -> None:
    model = ModelSpec("null", mpp=MPP, tile_size=TILE).build()
    with pytest.raises(ConfigError, match="cluster mode needs a checkpoint path"):
        segment_slides(_slides(slide_dir), model, tmp_path, single=False, scheduler="tcp://127.0.0.1:1")


def test_missing_distributed_is_a_config_error(slide_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'wsiseg\[distributed\]'"):
        segment_slides(_slides(slide_dir), ModelSpec("null", mpp=MPP, tile_size=TILE), tmp_path,
                       single=False, scheduler="tcp://127.0.0.1:1")


def test_unreachable_scheduler_is_one_line(slide_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    result = subprocess.run(
        [sys.executable, "-m", "wsiseg", "segment", str(slide_dir), "--scheduler", "tcp://127.0.0.1:1",
         "--model", "null", "--mpp", str(MPP), "--tile-size", str(TILE), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    assert result.stderr.startswith("wsiseg: error: cannot connect to the Dask scheduler tcp://127.0.0.1:1")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()


def test_cancelled_slide_stops_and_resumes(slide_dir: Path, tmp_path: Path) -> None:
    """A slide task stops at the next batch once cancelled, leaving an output the next run resumes."""
    from wsiseg.infer.cohort.cluster import Cancelled as _Cancelled
    from wsiseg.infer.cohort.cluster import StopWhenCancelled as _StopWhenCancelled

    spec = ModelSpec("null", mpp=MPP, tile_size=TILE)
    inner = CountingModel(spec.build())
    stopping = _StopWhenCancelled(inner, lambda: inner.batches >= 2)
    with pytest.raises(_Cancelled):
        segment_slide(slide_dir / "a.svs", stopping, tmp_path / "a.zarr", progress=False, batch_size=2)
    batch = segment_slides([slide_dir / "a.svs"], spec, tmp_path / "a.zarr", single=True, progress=False,
                           batch_size=2)
    assert batch.ok and batch.results[0].resumed and batch.results[0].n_predicted < batch.results[0].n_tiles


def test_worker_sees_its_task_cancelled(scheduler: str) -> None:
    from distributed import Client, Event, Variable

    from wsiseg.infer.cohort.cluster import cancel_check as _cancel_check

    def probe() -> None:  # nested: pickled by value, the workers cannot import this test module
        cancelled = _cancel_check()
        before = cancelled()
        Event("wsiseg-test-started").set()
        for _ in range(200):
            if cancelled():
                break
            time.sleep(0.05)
        Variable("wsiseg-test-cancelled").set([before, cancelled()])

    with Client(scheduler, set_as_default=False) as client:
        future = client.submit(probe, pure=False)
        assert Event("wsiseg-test-started", client=client).wait(timeout=20)
        future.cancel()
        assert list(Variable("wsiseg-test-cancelled", client=client).get(timeout=20)) == [False, True]


def _journal_cursor(out: Path) -> int:
    """The stitcher cursor committed in an output's journal (0 when there is none yet)."""
    import json

    from wsiseg.infer.journal import WORK_DIR

    try:
        return int(json.loads((out / WORK_DIR / "journal.json").read_text())["stitcher"]["cursor"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


@pytest.mark.slow
def test_worker_death_mid_slide_resumes_on_another_worker(checkpoint: Path,
                                                          tmp_path: Path) -> None:
    """A worker process killed mid-slide: the scheduler retries the slide on a live worker, which waits for
    the dead one's output lock to expire and resumes from the journal; the output equals a local run."""
    import signal
    import threading

    import dask
    from distributed import Client

    slide = tmp_path / "big.svs"
    write_synthetic_slide(slide, 3600, 3000, mpp=0.5, seed=13)
    spec = ModelSpec(checkpoint, "cpu")
    options = {"batch_size": 2, "checkpoint_s": 0.0, "preview": False}
    local = segment_slides([slide], spec, tmp_path / "local", single=False, progress=False, **options)
    n_tiles = local.results[0].n_tiles
    out = tmp_path / "cluster"
    # the dead worker's output lock expires after 2 s (default 30 s) and is checked every 0.2 s
    lease = {"distributed.scheduler.locks.lease-timeout": "2s",
             "distributed.scheduler.locks.lease-validation-interval": "0.2s"}
    with dask.config.set(lease), \
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:  # worker processes, as in production
        box: dict[str, CohortResult] = {}
        runner = threading.Thread(target=lambda: box.update(batch=segment_slides(
            [slide], spec, out, single=False, scheduler=str(cluster.scheduler_address), progress=False,
            **options)))
        runner.start()
        deadline = time.monotonic() + 120
        while _journal_cursor(out / "big.zarr") < 0.3 * n_tiles:  # a third of the slide committed
            assert time.monotonic() < deadline and runner.is_alive(), "the slide never got going"
            time.sleep(0.05)
        busy = [address for address, keys in client.processing().items() if keys]
        assert len(busy) == 1
        pid = client.run(os.getpid, workers=busy)[busy[0]]
        os.kill(pid, signal.SIGKILL)
        killed_at = _journal_cursor(out / "big.zarr")
        runner.join(timeout=180)
        assert not runner.is_alive()
    batch = box["batch"]
    assert batch.ok, batch.failures
    (result,) = batch.results
    assert result.resumed and 0 < result.n_predicted <= n_tiles - killed_at  # not from scratch
    probs_l, labels_l = _arrays(tmp_path / "local" / "big.zarr")
    probs_c, labels_c = _arrays(out / "big.zarr")
    assert labels_c.tobytes() == labels_l.tobytes() and probs_c.tobytes() == probs_l.tobytes()


def test_several_devices_match_one_and_share_the_slides(slide_dir: Path, checkpoint: Path,
                                                        tmp_path: Path) -> None:
    """``devices=["cpu", "cpu"]``: two worker processes, each with its own model replica pinned to its
    device; the two good slides run on different workers (none is queued behind a busy one) and give
    byte-identical outputs to the one-device run; the corrupt slide fails alone."""
    spec = ModelSpec(checkpoint, "cpu")
    slides = _slides(slide_dir)
    one = segment_slides(slides, spec, tmp_path / "one", single=False, progress=False, batch_size=2)
    lines: list[str] = []
    two = segment_slides(slides, spec, tmp_path / "two", single=False, devices=["cpu", "cpu"], progress=True,
                         report=lines.append, batch_size=2)
    assert [r.slide.name for r in two.results] == ["a.svs", "b.tiff"]
    assert [p.name for p, _ in two.failures] == ["c_corrupt.svs"]
    for name in ("a", "b"):
        assert _arrays(tmp_path / "two" / f"{name}.zarr")[0].tobytes() == \
            _arrays(tmp_path / "one" / f"{name}.zarr")[0].tobytes()
    workers = [line.split("[worker ")[1].rstrip("]") for line in lines if "[worker " in line]
    assert len(workers) == 2 and all(w.endswith(" cpu") for w in workers) and len(set(workers)) == 2
    assert one.n_tiles == two.n_tiles


def test_devices_are_checked() -> None:
    from wsiseg.errors import ConfigError
    from wsiseg.infer.cohort.devices import parse_devices

    assert parse_devices("cuda:0, cuda:1") == ("cuda:0", "cuda:1")
    assert parse_devices("cpu,cpu") == ("cpu", "cpu")
    for bad in ("", "gpu:0", "cuda:x"):
        with pytest.raises(ConfigError):
            parse_devices(bad)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            parse_devices("all")


def test_one_slide_on_several_devices_uses_replicas_here(slide_dir: Path, checkpoint: Path,
                                                         tmp_path: Path) -> None:
    """Fewer slides than devices: one model replica per device in this process, sharing the slide's
    batches (no worker processes); the output equals the one-device run (measured: byte-identical)."""
    spec = ModelSpec(checkpoint, "cpu")
    slide = [slide_dir / "a.svs"]
    one = segment_slides(slide, spec, tmp_path / "one.zarr", single=True, progress=False, batch_size=2)
    lines: list[str] = []
    two = segment_slides(slide, spec, tmp_path / "two.zarr", single=True, devices=["cpu", "cpu"],
                         progress=True, report=lines.append, batch_size=2)
    assert not any("[worker " in line for line in lines)  # ran here, not on a worker
    assert open_segmentation(tmp_path / "two.zarr").metadata.model["device"] == "cpu,cpu"
    probs_one, labels_one = _arrays(tmp_path / "one.zarr")
    probs_two, labels_two = _arrays(tmp_path / "two.zarr")
    assert probs_one.tobytes() == probs_two.tobytes() and labels_one.tobytes() == labels_two.tobytes()
    assert one.n_tiles == two.n_tiles
