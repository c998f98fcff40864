"""See the data as the model does: a grid of samples after the split's transform, each with its label drawn.

``python -m mnet_tasks.browse task=<task> [data.root=...] [split=train|val] [n=32] [key=value ...]`` builds the
task's DataModule as a run would (same seed, same transforms), takes the first ``n`` samples of the training loader
(augmented, as trained on) or the validation loader, and writes them as one PNG: ``output``, by default
``<paths.output_dir>/<split>.png`` (``outputs/<task>/browse/``). The task's adapter names the labels
(:meth:`~mnet_tasks.adapter.TaskAdapter.browse_samples`): class names, boxes with category names, present attributes,
a photo's location and cells, a face's identity; a plug-in task of classifier heads gets class names with no code.

Command line: Hydra overrides on ``conf/browse.yaml``, composed in-process like export's (no run folder).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import draw_bounding_boxes

from mnet_tasks.adapter import BrowseSample, adapter_of
from mnet_tasks.analysis import caption_font, denormalize, tile, wrap_text
from mnet_tasks.config import ConfigError, compose_config
from mnet_tasks.run import configured_task_class, validate_config

SPLITS = ("train", "val")
MIN_TILE_WIDTH = 128  # pixels: room for a caption under a small input
MARGIN = 4  # pixels around every picture and caption
LINE_SPACING = 2
BACKGROUND = (32, 32, 32)
TEXT_COLOR = (235, 235, 235)


def check_browse_config(cfg: DictConfig) -> None:
    """Fail before any data is read, naming the key."""
    if cfg.split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {cfg.split!r}")
    for key in ("n", "columns"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be an integer >= 1, got {value!r}")


def collect_samples(cfg: DictConfig) -> list[BrowseSample]:
    """The first ``cfg.n`` samples of the ``cfg.split`` loader, read by the task's adapter (fewer if the split is
    smaller)."""
    check_browse_config(cfg)
    validate_config(cfg)
    adapter = adapter_of(configured_task_class(cfg))
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader() if cfg.split == "train" else datamodule.val_dataloader()
    samples: list[BrowseSample] = []
    for batch in loader:
        samples += adapter.browse_samples(batch, datamodule)
        if len(samples) >= cfg.n:
            break
    if not samples:
        raise ValueError(f"the {cfg.split} loader of {datamodule.dataset_name} gave no samples")
    return samples[: cfg.n]


def display_pixels(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """A loader's ``(3, H, W)`` image as uint8 to look at: uint8 as it is, a float one de-normalised by ``mean`` and
    ``std`` (of ``[0, 1]`` values), as a plug-in's loader may deliver it."""
    return image if image.dtype == torch.uint8 else denormalize(image, mean, std)


@dataclass(frozen=True)
class SheetLayout:
    """The grid: every tile is one picture (top) and its caption (below, in ``font``) in a cell of the same size."""

    columns: int
    rows: int
    tile_width: int
    tile_height: int
    picture_height: int
    font: ImageFont.FreeTypeFont
    line_height: int

    def caption_lines(self, sample: BrowseSample) -> list[str]:
        return caption_lines(sample, self.font, self.tile_width - 2 * MARGIN)


def caption_lines(sample: BrowseSample, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    return [line for text in sample.caption for line in wrap_text(text, font, width)]


def sheet_layout(samples: Sequence[BrowseSample], columns: int) -> SheetLayout:
    """Up to ``columns`` tiles a row, as wide as the widest picture (at least :data:`MIN_TILE_WIDTH`) and as tall as
    the tallest picture and the longest wrapped caption."""
    font = caption_font()
    picture_height = max(sample.image.shape[-2] for sample in samples)
    tile_width = max(max(sample.image.shape[-1] for sample in samples), MIN_TILE_WIDTH) + 2 * MARGIN
    line_height = font.size + LINE_SPACING
    lines = max(len(caption_lines(sample, font, tile_width - 2 * MARGIN)) for sample in samples)
    columns = min(columns, len(samples))
    return SheetLayout(
        columns=columns,
        rows=math.ceil(len(samples) / columns),
        tile_width=tile_width,
        tile_height=picture_height + 3 * MARGIN + lines * line_height,
        picture_height=picture_height,
        font=font,
        line_height=line_height,
    )


def box_colors(samples: Sequence[BrowseSample]) -> dict[str, tuple[int, int, int]]:
    """One colour per box label on the sheet, from matplotlib's tab10 cycle in name order."""
    palette = matplotlib.colormaps["tab10"]
    names = sorted({label for sample in samples for label in sample.box_labels})
    return {name: tuple(round(255 * c) for c in palette(i % palette.N)[:3]) for i, name in enumerate(names)}


def draw_tile(
    sample: BrowseSample, layout: SheetLayout, mean: Sequence[float], std: Sequence[float], colors: dict
) -> Image.Image:
    """One cell of the grid: the sample's image as the model receives it, its boxes drawn, its caption below."""
    pixels = display_pixels(sample.image.cpu(), mean, std)
    if sample.boxes is not None and sample.box_labels:
        pixels = draw_bounding_boxes(
            pixels,
            sample.boxes.cpu(),
            labels=sample.box_labels,
            colors=[colors[label] for label in sample.box_labels],
            width=2,
        )
    cell = Image.new("RGB", (layout.tile_width, layout.tile_height), BACKGROUND)
    cell.paste(Image.fromarray(pixels.permute(1, 2, 0).numpy()), (MARGIN, MARGIN))
    draw = ImageDraw.Draw(cell)
    text_top = layout.picture_height + 2 * MARGIN
    for number, line in enumerate(layout.caption_lines(sample)):
        draw.text((MARGIN, text_top + number * layout.line_height), line, fill=TEXT_COLOR, font=layout.font)
    return cell


def draw_sheet(
    samples: Sequence[BrowseSample], mean: Sequence[float], std: Sequence[float], columns: int
) -> Image.Image:
    """Every sample in a tile of the grid (:func:`sheet_layout`), row by row."""
    layout = sheet_layout(samples, columns)
    colors = box_colors(samples)
    return tile([draw_tile(sample, layout, mean, std, colors) for sample in samples], layout.columns)


def browse(cfg: DictConfig) -> Path:
    """Write the grid of ``cfg.n`` samples of ``cfg.split`` (conf/browse.yaml) and return its path."""
    samples = collect_samples(cfg)
    output = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / f"{cfg.split}.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    draw_sheet(samples, cfg.normalize.mean, cfg.normalize.std, cfg.columns).save(output)
    return output


def main(overrides: list[str]) -> None:
    print(browse(compose_config(overrides, "browse")))


if __name__ == "__main__":
    main(sys.argv[1:])
