"""Helpers of the probe modules: run the CLI as a careless user would and check the promise
every command makes (one ``Error:`` line, exit code 2, no traceback, every file as it was)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from click.testing import CliRunner, Result

from geomap_gan import files

DEAD_PID = 999_999_999  # over any pid_max: a writer that no longer runs


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry below ``folder`` (hidden ones too): files with their bytes, folders, links."""
    out: dict[str, bytes | str] = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_symlink():
            out[key] = "link -> " + os.readlink(p)
        elif p.is_file():
            out[key] = p.read_bytes()
        elif p.is_dir():
            out[key] = "dir"
        else:
            out[key] = "special"
    return out


def run(args: list[object], **kwargs: object) -> Result:
    from geomap_gan.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)  # type: ignore[arg-type]


def one_line_error(result: Result, message: str) -> str:
    """The single ``Error:`` line of a refused command; asserts the promise."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert message in lines[0], (message, lines[0])
    return lines[0]


def refused(args: list[object], message: str, folder: Path) -> str:
    """Run the CLI: one ``Error:`` line naming ``message``, exit 2, ``folder`` as it was."""
    before = snapshot(folder)
    line = one_line_error(run(args), message)
    assert snapshot(folder) == before, args
    return line


def dead_temp_name(dst: Path, tag: str = "") -> Path:
    """A :func:`files.temp_path` name of ``dst`` whose writer is a process that no longer runs."""
    name = files.temp_path(dst, tag).name.replace(f"-{os.getpid()}-", f"-{DEAD_PID}-")
    return dst.parent / name


def small_dataset(root: Path, n: int = 3, side: int = 32) -> Path:
    """An A|B pair folder (train/, val/) of ``n`` random ``side`` px pairs each."""
    from PIL import Image

    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        for i in range(n):
            pair = np.random.default_rng(i).integers(0, 256, (side, 2 * side, 3), dtype=np.uint8)
            Image.fromarray(pair).save(root / split / f"{i + 1}.jpg")
    return root


TRAIN_TINY = ["--ngf", "4", "--ndf", "4", "--num-downs", "5", "--crop-size", "32",
              "--load-size", "32", "--max-steps", "1", "--device", "cpu"]  # fmt: skip
