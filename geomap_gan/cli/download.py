"""``download``: fetch datasets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from geomap_gan.cli.app import cli

log = logging.getLogger("geomap_gan")


# ---- download ------------------------------------------------------------------------------------
class _ByteBar:
    """Adapts ``progress(bytes_done, bytes_total)`` to a tqdm bar in bytes with rate and ETA."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        from tqdm import tqdm

        if self.bar is None or done < self.bar.n or total != self.bar.total:
            self.close()  # first call, or the server restarted the file from byte 0
            self.bar = tqdm(total=total, initial=done, desc=self.desc, unit="B",
                            unit_scale=True, unit_divisor=1024)  # fmt: skip
        else:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@cli.group()
def download() -> None:
    """Fetch training data."""


@download.command("maps")
@click.argument("dest", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--url", default=None, help="Mirror of maps.tar.gz (default: "
              "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/maps.tar.gz).")  # fmt: skip
@click.option("--force", is_flag=True, help="Download again even if DIR is complete and verified.")
@click.option("--timeout", default=60.0, show_default=True,
              help="Seconds without data before an attempt fails.")  # fmt: skip
@click.option("--retries", default=5, show_default=True,
              help="Further attempts, each resuming with an HTTP Range request.")  # fmt: skip
@click.option("--manifest", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None,
              help="SHA-256 manifest to verify against (default: the shipped one).")  # fmt: skip
@click.pass_context
def download_maps(
    ctx: click.Context,
    dest: Path,
    url: str | None,
    force: bool,
    timeout: float,
    retries: int,
    manifest: Path | None,
) -> None:
    """Fetch the pix2pix maps dataset (1096 train + 1098 val A|B pairs) into DIR/train and
    DIR/val, checking every file against its SHA-256.

    An interrupted download resumes where it stopped; nothing appears at DIR until every file has
    verified; a complete DIR is left alone (--force to redo).

    \b
    Example:
      geomap-gan download maps data/maps
      geomap-gan train data/maps --out runs/maps
    """
    from geomap_gan.download import MAPS_URL, DownloadOptions
    from geomap_gan.download import download_maps as run_download

    opts = DownloadOptions(url=url or MAPS_URL, force=force, timeout=timeout, retries=retries)
    bar = None if ctx.obj["quiet"] else _ByteBar(Path(opts.url).name or "download")
    try:
        result = run_download(dest, opts, progress=bar, manifest=manifest)
    finally:
        if bar is not None:
            bar.close()
    if result.skipped:
        click.echo(
            f"{result.path} already holds all {result.files} verified files (--force to redo)"
        )
    else:
        click.echo(f"{result.files} files downloaded and verified in {result.path}")
