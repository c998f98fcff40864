"""Error analysis at validation: what a task shows of its mistakes, written to ``<run folder>/analysis/`` (and to
TensorBoard) every validation epoch, and the drawing pieces the tasks share.

Each task decides what it shows; this module writes it, so that the run's report, and any plug-in task, find every
task's analysis in one place and one form: ``analysis/<name>.png`` pictures and ``analysis/<name>.csv`` tables (a
header row, then plain values), always those of the latest validation epoch. ``task.error_analysis=false``
(:meth:`~mnet_tasks.task_module.TaskModule.set_error_analysis`) switches it off, and then nothing is collected.
"""

from __future__ import annotations

import csv
import functools
import heapq
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from pytorch_lightning.loggers import TensorBoardLogger

from mnet_tasks.distributed import gather_objects

if TYPE_CHECKING:
    from mnet_tasks.task_module import TaskModule

ANALYSIS_FOLDER = "analysis"
Picture = Figure | Image.Image
Table = Sequence[Mapping[str, Any]]  # rows of one table, each with the same columns in the same order


def collects_analysis(module: TaskModule) -> bool:
    """Whether this validation epoch's mistakes are collected (on every process): ``task.error_analysis`` is on and
    this is not Lightning's sanity check, whose two batches describe nothing."""
    return module.error_analysis and not module.trainer.sanity_checking


def writes_analysis(module: TaskModule) -> bool:
    """:func:`collects_analysis`, on the process that writes the files (rank zero)."""
    return collects_analysis(module) and module.trainer.is_global_zero


def analysis_folder(module: TaskModule) -> Path:
    return Path(module.trainer.default_root_dir) / ANALYSIS_FOLDER


def save_analysis(
    module: TaskModule, pictures: Mapping[str, Picture] | None = None, tables: Mapping[str, Table] | None = None
) -> Path:
    """This epoch's analysis in place of the last one: ``<name>.png`` per picture (also logged to TensorBoard as
    ``analysis/<name>``), ``<name>.csv`` per table that has rows; every other picture or table of the folder is
    removed, since an earlier epoch's would describe another model. Call it once per validation epoch, where
    :func:`writes_analysis` holds. Returns the folder."""
    folder = analysis_folder(module)
    folder.mkdir(parents=True, exist_ok=True)
    written = set()
    for name, picture in (pictures or {}).items():
        image = figure_image(picture) if isinstance(picture, Figure) else picture.convert("RGB")
        path = _path(folder, name, ".png")
        image.save(path)
        written.add(path)
        log_picture(module, f"{ANALYSIS_FOLDER}/{name}", image)
    for name, rows in (tables or {}).items():
        if rows:
            path = _path(folder, name, ".csv")
            write_table(path, rows)
            written.add(path)
    for path in folder.iterdir():
        if path.suffix in (".png", ".csv") and path not in written:
            path.unlink()
    return folder


def _path(folder: Path, name: str, suffix: str) -> Path:
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"an analysis name is a plain file name without a suffix, got {name!r}")
    return folder / f"{name}{suffix}"


def write_table(path: Path, rows: Table) -> None:
    """``rows`` as CSV: the first row's keys as the header; floats written in full (``repr``), NaN as ``nan``."""
    columns = list(rows[0])
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for row in rows:
            if list(row) != columns:
                raise ValueError(f"{path.name}: a row has the columns {list(row)}, the first one {columns}")
            writer.writerow(row.values())


def figure_image(figure: Figure) -> Image.Image:
    """A matplotlib figure rendered as an RGB picture (Agg, at the figure's own dpi)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def log_picture(module: TaskModule, tag: str, picture: Image.Image) -> None:
    """``picture`` to each TensorBoard logger of ``module``, at the current global step."""
    for logger in module.loggers:
        if isinstance(logger, TensorBoardLogger):
            pixels = np.asarray(picture.convert("RGB"))
            logger.experiment.add_image(tag, pixels, module.global_step, dataformats="HWC")


class TopK:
    """The ``k`` items of highest score offered so far, and no other: a running top-K over the validation batches
    (e.g. the most confident mistakes) that never holds an epoch's images. Of equal scores the first offered stays.

    Check :meth:`admits` before building an item that is costly to keep (an image copied off the device).
    """

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"TopK keeps at least one item, got k={k}")
        self.k = k
        self._heap: list[tuple[float, int, Any]] = []  # (score, -order, item): the item to drop next on top
        self._offered = 0

    def __len__(self) -> int:
        return len(self._heap)

    def admits(self, score: float) -> bool:
        return len(self._heap) < self.k or score > self._heap[0][0]

    def offer(self, score: float, item: Any) -> None:
        if not self.admits(score):
            return
        entry = (float(score), -self._offered, item)
        self._offered += 1
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def items(self) -> list[tuple[float, Any]]:
        """``(score, item)`` pairs, the highest score first."""
        return [(score, item) for score, _, item in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]

    def gathered(self) -> list[tuple[float, Any]]:
        """:meth:`items` over every process of a distributed run (the top k of the whole validation set); every
        process must call it."""
        merged = TopK(self.k)
        for part in gather_objects(self.items()):
            for score, item in part:
                merged.offer(score, item)
        return merged.items()


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised ``(..., 3, H, W)`` float images back to the uint8 pixels the network saw (on the CPU)."""
    shape = (-1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32).view(shape)
    pixels = images.detach().float().cpu() * std_t + mean_t
    return pixels.clamp_(0, 1).mul_(255).round_().to(torch.uint8).contiguous()


def label_names(module: TaskModule, count: int) -> list[str]:
    """The names of the ``count`` classes, from the DataModule's ``class_names`` where it has that many, else
    the class indices (a plug-in's DataModule need not name its classes)."""
    names = getattr(getattr(module.trainer, "datamodule", None), "class_names", None)
    if names is not None and len(names) == count:
        return [str(name) for name in names]
    return [str(index) for index in range(count)]


@functools.cache
def caption_font(size: int = 12) -> ImageFont.FreeTypeFont:
    """DejaVu Sans, which matplotlib ships (so it is always there), for captions with arrows and accents."""
    return ImageFont.truetype(font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans")), size)


def wrap_text(text: str, font: ImageFont.FreeTypeFont, width: int, max_lines: int | None = None) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels: broken at spaces, and a word wider than a line (a long class
    name) wherever it must; with ``max_lines``, what does not fit in them is cut with an ellipsis."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
            continue
        lines.append("")
        for character in word:
            if lines[-1] and font.getlength(lines[-1] + character) > width:
                lines.append("")
            lines[-1] += character
    if max_lines is not None and len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and font.getlength(f"{last}…") > width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], f"{last}…"]
    return lines


def captioned(picture: Image.Image, text: str, min_width: int = 160) -> Image.Image:
    """``picture`` with ``text`` on a strip below it; a small picture is first enlarged by a whole factor (pixels
    kept sharp) to at least ``min_width`` so that its caption fits."""
    factor = max(1, -(-min_width // picture.width))
    if factor > 1:
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)
    font = caption_font()
    lines = wrap_text(text, font, picture.width - 6, max_lines=3)
    line_height = font.size + 3
    sheet = Image.new("RGB", (picture.width, picture.height + 4 + line_height * len(lines)), (255, 255, 255))
    sheet.paste(picture.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(lines):
        draw.text((3, picture.height + 2 + i * line_height), line, fill=(20, 20, 20), font=font)
    return sheet


def tile(pictures: Sequence[Image.Image], columns: int = 4) -> Image.Image:
    """Pictures of any sizes on one sheet, row by row."""
    rows = [pictures[i : i + columns] for i in range(0, len(pictures), columns)]
    width = max(sum(p.width for p in row) for row in rows)
    height = sum(max(p.height for p in row) for row in rows)
    sheet = Image.new("RGB", (width, height), (32, 32, 32))
    y = 0
    for row in rows:
        x = 0
        for picture in row:
            sheet.paste(picture, (x, y))
            x += picture.width
        y += max(p.height for p in row)
    return sheet


def ranked_bars(
    values: Mapping[str, float],
    *,
    xlabel: str,
    title: str = "",
    mean: float | None = None,
    markers: Mapping[str, Mapping[str, float]] | None = None,
    xlim: tuple[float, float] | None = (0.0, 1.0),
) -> Figure:
    """One horizontal bar per name, the highest value on top (NaN values left out); ``mean`` as a dashed line
    with its value, and each series of ``markers`` (e.g. the AP of chance) as a dot on the bars it names."""
    ranked = sorted(((v, name) for name, v in values.items() if v == v), key=lambda pair: -pair[0])
    names = [name for _, name in ranked]
    figure = Figure(figsize=(8, 1.4 + 0.24 * max(1, len(names))), dpi=100)
    axes = figure.add_subplot()
    positions = np.arange(len(names))
    axes.barh(positions, [v for v, _ in ranked], color="tab:blue", height=0.7)
    for i, (label, series) in enumerate((markers or {}).items()):
        color = ("black", "tab:orange", "tab:green", "tab:purple")[i % 4]
        shown = [(i, series[name]) for i, name in enumerate(names) if name in series]
        axes.scatter([v for _, v in shown], [i for i, _ in shown], color=color, s=14, zorder=3, label=label)
    if mean is not None:
        axes.axvline(mean, color="tab:red", linestyle="--", linewidth=1.2, label=f"mean {mean:.3f}")
    axes.set_yticks(positions, names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    if xlim is not None:
        axes.set_xlim(*xlim)
    axes.grid(True, axis="x", color="0.85", linewidth=0.6)
    if markers or mean is not None:
        axes.legend(loc="lower right", fontsize=8)
    if title:
        axes.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure
