"""Tiles of training pairs and their spatial split: candidate tile origins on the stride lattice,
and whole blocks of tiles given to validation as one compact region, so that no training tile
overlaps or touches a val tile."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass


log = logging.getLogger(__name__)


BLOCK_STEPS = (1, 2, 4, 8, 16, 32, 64)  # block sides tried for the split, in steps
MAX_BLOCKS = 400  # blocks at most in a split (its greedy choice is blocks x tiles per block)


# ---- tiles and the spatial split ---------------------------------------------------------------
def candidate_origins(
    width: int, height: int, tile: int, step: int, phase: tuple[int, int]
) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of ``tile`` px windows wholly inside a width x height grid, every
    ``step`` px from ``phase``, row by row."""
    xs = range(phase[0], width - tile + 1, step)
    ys = range(phase[1], height - tile + 1, step)
    return [(x, y) for y in ys for x in xs]


def split_tiles(
    origins: Sequence[tuple[int, int]],
    tile: int,
    val_tile: int,
    val_share: float,
    block: int,
    phase: tuple[int, int],
    seed: int,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int, int]:
    """(train, val, dropped, val blocks) of tile origins.

    The grid is cut into square blocks of ``block`` px (a tile belongs to the block of its
    centre) and whole blocks go to val until ``val_share`` of the tiles are val; a training tile
    (``tile`` px) that overlaps or touches a val tile (``val_tile`` px at the same origin) is
    dropped. Blocks are chosen greedily, each time the one that drops the fewest training tiles
    per val tile it adds (ties in a seeded random order): val grows as a compact region from the
    edge of the tiled area, so the ring of dropped tiles around it stays short.
    """
    if val_share <= 0 or len(origins) < 2:
        return list(origins), [], 0, 0
    xy = np.array(origins, dtype=np.int64)
    keys = np.stack(
        [(xy[:, 0] + tile // 2 - phase[0]) // block, (xy[:, 1] + tile // 2 - phase[1]) // block], 1
    )
    blocks, block_of = np.unique(keys, axis=0, return_inverse=True)
    block_of = block_of.ravel()
    n_blocks = len(blocks)
    # touches[i, b]: training tile i overlaps or touches (closed intervals) a val tile of block b
    x, y = xy[:, 0:1], xy[:, 1:2]
    touches = np.zeros((len(xy), n_blocks), dtype=bool)
    for b in range(n_blocks):
        vx, vy = xy[block_of == b, 0], xy[block_of == b, 1]
        touches[:, b] = (
            (x <= vx + val_tile) & (vx <= x + tile) & (y <= vy + val_tile) & (vy <= y + tile)
        ).any(axis=1)
    member = block_of[:, None] == np.arange(n_blocks)[None, :]  # tile i lies in block b
    size = member.sum(axis=0)
    priority = np.random.default_rng(seed).permutation(n_blocks)  # tie-break
    chosen = np.zeros(n_blocks, dtype=bool)
    in_val = np.zeros(len(xy), dtype=bool)
    dropped = np.zeros(len(xy), dtype=bool)
    goal = val_share * len(xy)
    while in_val.sum() < goal and not chosen.all():
        new_val = in_val[:, None] | member
        new_dropped = (dropped[:, None] | touches) & ~new_val
        cost = (new_dropped.sum(axis=0) - dropped.sum()) / np.maximum(size, 1)
        cost = np.where(chosen, np.inf, cost)
        order = np.lexsort((priority, cost))
        b = int(order[0])
        chosen[b] = True
        in_val |= member[:, b]
        dropped = (dropped | touches[:, b]) & ~in_val
    val = [tuple(map(int, o)) for o in xy[in_val]]
    train = [tuple(map(int, o)) for o in xy[~in_val & ~dropped]]
    return train, val, int(dropped.sum()), int(chosen.sum())  # type: ignore[return-value]


def choose_split(
    origins: Sequence[tuple[int, int]],
    tile: int,
    val_tile: int,
    val_share: float,
    block: int,
    step: int,
    phase: tuple[int, int],
    seed: int,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int, int, int]:
    """:func:`split_tiles` with ``block`` px blocks, or (``block`` 0) the block side among the
    three smallest of :data:`BLOCK_STEPS` that make at most :data:`MAX_BLOCKS` blocks which
    keeps the most training tiles (ties: the larger). Returns (train, val, dropped, val
    blocks, block side)."""
    if block:
        return (*split_tiles(origins, tile, val_tile, val_share, block, phase, seed), block)
    xy = np.array(origins, dtype=np.int64).reshape(-1, 2)
    sizes = []
    for k in BLOCK_STEPS:
        side = k * step
        keys = (xy + tile // 2 - np.array(phase)) // side
        if len(np.unique(keys, axis=0)) <= MAX_BLOCKS:
            sizes.append(side)
        if len(sizes) == 3:
            break
    best = None
    for side in sizes or [BLOCK_STEPS[-1] * step]:
        found = (*split_tiles(origins, tile, val_tile, val_share, side, phase, seed), side)
        if best is None or len(found[0]) >= len(best[0]):
            best = found
    assert best is not None
    return best
