"""Blending windows and the chunked stitcher, checked against a brute-force whole-canvas blend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsiseg.infer.blending import MIN_WEIGHT, BlendWindow, blend_window
from wsiseg.infer.stitch import DEFAULT_RAM_BUDGET, FinishedChunk, Layout, Stitcher

#: Waiting accumulators in memory: none (every one spilled and read back), some, all of them.
BUDGETS = [0, 40_000, DEFAULT_RAM_BUDGET]


def _assemble(layout: Layout, k: int, chunks: list[FinishedChunk]) -> np.ndarray:
    out = np.full((k, layout.height_o, layout.width_o), np.nan, np.float32)
    seen = set()
    for ch in chunks:
        assert (ch.i, ch.j) not in seen, "chunk finished twice"
        seen.add((ch.i, ch.j))
        y0, y1, x0, x1 = ch.box
        probs = ch.get()
        out[:, y0:y1, x0:x1] = 0.0 if probs is None else probs
    assert len(seen) == layout.n_chunk_rows * layout.n_chunk_cols, "some chunks never finished"
    return out


def _reference(layout: Layout, k: int, window: np.ndarray,
               tiles: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
    s, t = layout.step_o, layout.tile_o
    h, w = layout.n_rows * s + t, layout.n_cols * s + t
    num = np.zeros((k, h, w))
    den = np.zeros((h, w))
    for (r, c), p in tiles.items():
        num[:, r * s:r * s + t, c * s:c * s + t] += p * window
        den[r * s:r * s + t, c * s:c * s + t] += window
    ref = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return ref[:, :layout.height_o, :layout.width_o]


def _run(layout: Layout, k: int, window: np.ndarray, tiles: dict[tuple[int, int], np.ndarray],
         work: Path, ram_budget: int = 0) -> list[FinishedChunk]:
    st = Stitcher(layout, k, window, work, ram_budget=ram_budget)
    chunks: list[FinishedChunk] = []
    for (r, c) in sorted(tiles):
        chunks += st.add(r, c, tiles[(r, c)])
    chunks += st.finish()
    return chunks


@pytest.mark.parametrize("kind", list(BlendWindow))
def test_window_positive_bounded(kind: BlendWindow) -> None:
    w = blend_window(64, 16, kind)
    assert w.shape == (64, 64) and w.dtype == np.float32
    assert w.min() >= np.float32(MIN_WEIGHT)
    assert w.max() == pytest.approx(1.0)
    assert np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])  # symmetric


def test_cosine_ramps_are_partition_of_unity() -> None:
    t, o = 64, 16
    prof = blend_window(t, o, BlendWindow.COSINE)[t // 2]  # a row through the interior (weight 1 rows)
    # left ramp of one tile + right ramp of its left neighbour over the shared o pixels
    np.testing.assert_allclose(prof[:o] + prof[t - o:], 1.0, atol=1e-6)
    assert prof[o:t - o].min() == pytest.approx(1.0)
    assert 0 < prof[0] < 0.01  # smooth: starts near 0, never exactly 0


def test_window_needs_a_checked_overlap() -> None:
    """Sizes are checked once where they enter (Tiling.create); the window only asserts them."""
    with pytest.raises(AssertionError, match=r"Tiling\.create"):
        blend_window(64, 40)


@pytest.mark.parametrize("kind", list(BlendWindow))
def test_constant_tiles_blend_to_constant_without_seam(kind: BlendWindow, tmp_path: Path) -> None:
    layout = Layout.covering(300, 190, 64, 16, chunk_size=32)
    k = 3
    p = np.array([0.2, 0.3, 0.5], np.float32)[:, None, None] * np.ones((k, 64, 64), np.float32)
    tiles = {(r, c): p for r in range(layout.n_rows) for c in range(layout.n_cols)}
    out = _assemble(layout, k, _run(layout, k, blend_window(64, 16, kind), tiles, tmp_path))
    np.testing.assert_allclose(out, p[:, :1, :1] * np.ones_like(out), atol=1e-6)
    # no seam: neighbouring pixels never differ
    assert np.abs(np.diff(out, axis=2)).max() < 1e-6 and np.abs(np.diff(out, axis=1)).max() < 1e-6


@pytest.mark.parametrize(("size", "tile", "overlap", "chunk", "kind"), [
    ((300, 190), 64, 16, 32, BlendWindow.COSINE),
    ((257, 129), 48, 24, 64, BlendWindow.GAUSSIAN),
    ((200, 200), 50, 0, 16, BlendWindow.UNIFORM),
    ((40, 30), 64, 8, 128, BlendWindow.COSINE),  # one tile bigger than the image
])
@pytest.mark.parametrize("budget", BUDGETS)
def test_matches_bruteforce_blend_with_skipped_tiles(size: tuple[int, int], tile: int, overlap: int,
                                                     chunk: int, kind: BlendWindow, budget: int,
                                                     tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    layout = Layout.covering(size[0], size[1], tile, overlap, chunk_size=chunk)
    k = 4
    window = blend_window(tile, overlap, kind)
    tiles = {}
    for r in range(layout.n_rows):
        for c in range(layout.n_cols):
            if layout.n_tiles > 1 and rng.random() < 0.25:
                continue  # skipped (no tissue)
            logits = rng.normal(size=(k, tile, tile)).astype(np.float32)
            e = np.exp(logits)
            tiles[(r, c)] = e / e.sum(axis=0)
    out = _assemble(layout, k, _run(layout, k, window, tiles, tmp_path, budget))
    ref = _reference(layout, k, window, tiles)
    np.testing.assert_allclose(out, ref, atol=2e-6)
    covered = ref.sum(axis=0) > 0.5
    np.testing.assert_allclose(out.sum(axis=0)[covered], 1.0, atol=1e-5)
    assert (out[:, ~covered] == 0).all()  # not analysed: exactly 0


@pytest.mark.parametrize("budget", BUDGETS)
def test_resume_from_saved_state_is_bit_identical(budget: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    layout = Layout.covering(330, 200, 64, 16, chunk_size=32)
    k = 3
    window = blend_window(64, 16)
    keys = [(r, c) for r in range(layout.n_rows) for c in range(layout.n_cols) if rng.random() > 0.2]
    tiles = {key: rng.dirichlet(np.ones(k), size=(64, 64)).transpose(2, 0, 1).astype(np.float32)
             for key in keys}
    full = _assemble(layout, k, _run(layout, k, window, tiles, tmp_path / "full"))
    assert np.array_equal(full, _assemble(layout, k, _run(layout, k, window, tiles, tmp_path / "b", budget)))
    for stop_after in (1, len(keys) // 3, len(keys) - 1):
        work = tmp_path / f"resume{stop_after}"
        st = Stitcher(layout, k, window, work, ram_budget=budget)
        chunks: list[FinishedChunk] = []
        for key in keys[:stop_after]:
            chunks += st.add(*key, tiles[key])
        state = st.save_state()
        st.collect_garbage(state)
        # continue with dirty work after the commit that a crash would lose
        st.add(*keys[stop_after], tiles[keys[stop_after]])
        del st
        st2 = Stitcher(layout, k, window, work, state=state, ram_budget=budget)
        assert st2.cursor == layout.tile_index(*keys[stop_after - 1]) + 1
        for key in keys[stop_after:]:
            chunks += st2.add(*key, tiles[key])
        chunks += st2.finish()
        # chunks finished before the crash were written then; the resumed ones complete the image
        assert np.array_equal(_assemble(layout, k, chunks), full)


@pytest.mark.parametrize("budget", [0, 200_000])
def test_memory_is_bounded_by_the_budget_whatever_the_width(budget: int, tmp_path: Path) -> None:
    k = 2
    chunk_bytes = (k + 1) * 64 * 64 * 4
    peak, spilled = {}, {}
    for width in (600, 2400):
        layout = Layout.covering(width, 300, 64, 16, chunk_size=64)
        work = tmp_path / str(width)
        st = Stitcher(layout, k, blend_window(64, 16), work, ram_budget=budget)
        p = np.full((k, 64, 64), 0.5, np.float32)
        most = 0
        for r in range(layout.n_rows):
            for c in range(layout.n_cols):
                st.add(r, c, p)
                most = max(most, st.live_bytes())
        spilled[width] = any(work.glob("acc_*.f32"))
        st.finish()
        peak[width] = most
    # beyond the budget: only the chunks the current tile touches (<= 4) and their left neighbours
    assert peak[600] <= peak[2400] <= budget + 6 * chunk_bytes
    assert spilled[2400]  # the wide image does not fit the budget: waiting chunks went to disk


def test_rejects_out_of_order_tiles(tmp_path: Path) -> None:
    layout = Layout.covering(200, 200, 64, 16, chunk_size=64)
    st = Stitcher(layout, 1, blend_window(64, 16), tmp_path)
    st.add(1, 1, np.ones((1, 64, 64), np.float32))
    with pytest.raises(ValueError, match="row-major"):
        st.add(0, 3, np.ones((1, 64, 64), np.float32))


def test_damaged_resume_state_is_a_user_error(tmp_path: Path) -> None:
    from wsiseg.errors import OutputError

    layout = Layout.covering(300, 200, 64, 16, chunk_size=64)
    st = Stitcher(layout, 2, blend_window(64, 16), tmp_path)
    for c in range(layout.n_cols):
        st.add(0, c, np.full((2, 64, 64), 0.5, np.float32))
    state = st.save_state()
    files = sorted(Stitcher.referenced_files(state))
    assert files, "a finished tile row leaves partial accumulators for the next row"
    for name in files:
        (tmp_path / name).write_bytes(b"\x00" * 10)  # truncated
    st2 = Stitcher(layout, 2, blend_window(64, 16), tmp_path, state=state)
    with pytest.raises(OutputError, match="`overwrite=True`"):
        st2.add(1, 0, np.full((2, 64, 64), 0.5, np.float32))


def test_resume_state_of_another_format_is_a_user_error(tmp_path: Path) -> None:
    from wsiseg.errors import OutputError

    layout = Layout.covering(300, 200, 64, 16, chunk_size=64)
    old = {"cursor": 5, "gen": 3, "accs": {"0,0": ["acc_0_0_3.f32", [[0, 64, 0, 64]]]}}  # before layers
    with pytest.raises(OutputError, match="another wsiseg version"):
        Stitcher(layout, 2, blend_window(64, 16), tmp_path, state=old)
    broken = {"format": 2, "cursor": 5, "gen": 3, "accs": {"0,0": [["acc_0_0_3.f32"]]}}
    with pytest.raises(OutputError, match="damaged"):
        Stitcher(layout, 2, blend_window(64, 16), tmp_path, state=broken)
