"""``python -m eval.figure --out grid.png``: a picture of the test tiles, stage by stage.

One row per tile: SAR (false colour) | opt_v1 | opt_v2 | opt_v3 | the one-network control | real
optical, with the app's fixed stretches (``gac_pipeline.display``: the same DN is the same colour
in every panel, so brightness differences between stages are real), each panel upscaled by an
integer factor with nearest neighbour (no smoothing that would hide blur or texture). Under every optical panel:
PSNR (dB, bands B02, B03, B04, B08), ``structure_r`` and ``sharpness`` against the real tile, the
per-tile scores of ``per_tile.csv`` (opt_v1 = ``v1``, opt_v2 = ``v1+v2``, opt_v3 = ``v1+v2+v3``,
the control = ``unet_control``). The control is the preset's stored one (``references/control``);
a preset without one gets a grey panel captioned "n/a" with the reason.

The pipeline runs as the ablation runs it (``eval.ablation.run_pipeline``: the pair's month and
biome, the same seed), once per tile with all three stages. By default every clear test tile
(``clear_land``), sorted by name; ``--tiles N`` keeps the first N, ``--include-cloudy`` takes
every evaluation pair.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

# Layout in pixels (the figure is drawn at DPI, so 1 figure pixel = 1 image pixel).
DPI = 100
PAD = 8  # between and around panels
HEADER = 28  # column titles
ROW_TITLE = 18  # tile name, month, biome above each row
CAPTION = 18  # scores under each panel
FOOTER = 20  # what the captions mean
COLUMNS = ("SAR (R VV, G VH, B VV−VH)", "opt_v1 (stage 1)", "opt_v2 (+ refiner)", "opt_v3 (+ grounding)",
           "one-network control", "real optical (S2L2A)")
OUTPUTS = ("opt_v1", "opt_v2", "opt_v3")
DEFAULT_SCALE = 2


def grid_size(n_tiles: int, tile_px: int, scale: int = DEFAULT_SCALE) -> tuple[int, int]:
    """(width, height) in pixels of the grid for ``n_tiles`` square tiles of ``tile_px`` pixels."""
    panel = tile_px * scale
    width = len(COLUMNS) * panel + (len(COLUMNS) + 1) * PAD
    height = HEADER + n_tiles * (ROW_TITLE + panel + CAPTION) + FOOTER
    return width, height


def figure_pairs(data_dir: str | Path, tiles: int | None = None, *,
                 include_cloudy: bool = False) -> list:
    """The pairs to draw: the clear evaluation pairs (or every one), sorted by name, the first ``tiles``.

    Raises:
        FileNotFoundError: ``data_dir`` is not a folder.
        ValueError: nothing to draw.
    """
    from eval.ablation import scored_pairs

    pairs = scored_pairs(data_dir)
    if not include_cloudy:
        pairs = [info for info in pairs if info.clear_land is True]
        if not pairs:
            raise ValueError(f"{data_dir}: no clear_land evaluation pairs (use --include-cloudy to draw every pair)")
    return sorted(pairs, key=lambda info: info.name)[:tiles]


def render_grid(out: str | Path, data_dir: str | Path | None = None, preset: str = "mini", *,
                tiles: int | None = None, seed: int = 0, scale: int = DEFAULT_SCALE,
                include_cloudy: bool = False) -> Path:
    """Run the pipeline on the chosen tiles and write the grid PNG to ``out``.

    Args:
        out: PNG path (its folder is created).
        data_dir: Dataset folder (its test split, else every pair); None: the bundled data.
        preset: ``mini``, ``hub``, a pipeline folder or ``repo@revision``.
        tiles: Draw only the first N tiles.
        seed: Seeds the pipeline, as in ``python -m eval``.
        scale: Integer nearest-neighbour upscaling of every panel.
        include_cloudy: Draw cloudy pairs too.

    Returns:
        The PNG's path.

    Raises:
        FileNotFoundError: ``data_dir`` is not a folder.
        ValueError: bad arguments or nothing to draw.
    """
    if (tiles is not None and tiles < 1) or scale < 1:
        raise ValueError(f"tiles and scale must be positive, got {tiles} and {scale}")
    from eval.ablation import run_pipeline, scored_pairs
    from gac_pipeline.bands import REFLECTANCE_SCALE
    from gac_pipeline.data import DEFAULT_DATA_DIR, PairDataset, scene_clusters
    from gac_pipeline.display import RGB_MAX_REFLECTANCE, SAR_STRETCH_DB, rgb_composite, sar_false_colour
    from gac_pipeline.metrics import psnr, sharpness, structure_r
    from gac_pipeline.presets import load_preset
    from gac_pipeline.references import load_for_preset
    from gac_pipeline.stages.terramind_common import seed_everything

    data_dir = DEFAULT_DATA_DIR if data_dir is None else data_dir
    pairs = figure_pairs(data_dir, tiles, include_cloudy=include_cloudy)
    # Cluster ids as in per_tile.csv: over every evaluated pair.
    names = [info.name for info in scored_pairs(data_dir)]
    clusters = dict(zip(names, scene_clusters(names), strict=True))
    seed_everything(seed)
    pipeline = load_preset(preset)
    references = load_for_preset(preset)
    no_control = ("no references stored with this preset" if references is None
                  else references.available()["unet_control"])
    dataset = PairDataset(pairs)
    rows = []
    for index, info in enumerate(pairs):
        item = dataset[index]
        s1, target = item["s1"].numpy(), item["s2"].numpy()
        result = run_pipeline(pipeline, item, seed=seed)
        panels = [sar_false_colour(s1)]
        captions = [f"month {item['month'] or '?'} · {info.biome}"]
        predictions = [getattr(result, output) for output in OUTPUTS]
        predictions.append(references.predict("unet_control", s1) if no_control is None else None)
        for prediction in predictions:
            if prediction is None:
                panels.append(np.full_like(panels[0], 128))
                captions.append(f"n/a: {no_control}")
                continue
            panels.append(rgb_composite(prediction))
            captions.append(f"PSNR {_number(psnr(prediction, target))} · r {_number(structure_r(prediction, target))}"
                            f" · sharp {_number(sharpness(prediction, target))}")
        panels.append(rgb_composite(target))
        captions.append("clear_land" if info.clear_land else "not clear_land" if info.clear_land is False else "")
        title = f"{info.name} · scene cluster {clusters[info.name]}"
        rows.append((title, [_upscale(panel, scale) for panel in panels], captions))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = "trained" if pipeline.config.trained else "UNTRAINED (random weights)"
    footer = (f"{pipeline.label.split(':')[0]} ({state}), seed {seed}. Under each stage: PSNR (dB, B02/B03/B04/B08)"
              " · r = structure_r · sharp = sharpness, both against the real tile (sharpness 1 = as sharp as real)."
              f" Fixed stretches: optical DN 0..{RGB_MAX_REFLECTANCE * REFLECTANCE_SCALE:.0f}; SAR "
              + ", ".join(f"{name} {low:g}..{high:g}" for name, (low, high) in SAR_STRETCH_DB.items()) + " dB.")
    tile_px = max(max(image.shape[:2]) for _, panels, _ in rows for image in panels) // scale
    _draw(rows, out, tile_px=tile_px, scale=scale, footer=footer)
    return out


def _number(value: float) -> str:
    """Two decimals; "inf" for a perfect PSNR, "n/a" for an undefined score."""
    if value is not None and math.isinf(value):
        return "inf"
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of an (H, W, 3) image by an integer factor."""
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def _draw(rows: list[tuple[str, list[np.ndarray], list[str]]], out: Path, *, tile_px: int, scale: int,
          footer: str) -> None:
    """Place every panel at exact pixel positions (so nothing is resampled) and save the PNG."""
    from matplotlib.figure import Figure

    width, height = grid_size(len(rows), tile_px, scale)
    panel = tile_px * scale
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")

    def box(x: float, top: float, w: float, h: float) -> list[float]:
        """Figure coordinates of a box given in pixels from the top-left corner."""
        return [x / width, 1.0 - (top + h) / height, w / width, h / height]

    def text(x: float, top: float, label: str, **style) -> None:
        figure.text(x / width, 1.0 - top / height, label, va="center", **style)

    for column, label in enumerate(COLUMNS):
        text(PAD + column * (panel + PAD) + panel / 2, HEADER / 2, label, ha="center", fontsize=9, weight="bold")
    top = HEADER
    for title, panels, captions in rows:
        text(PAD, top + ROW_TITLE / 2, title, ha="left", fontsize=7.5, family="monospace")
        top += ROW_TITLE
        for column, (image, caption) in enumerate(zip(panels, captions, strict=True)):
            left = PAD + column * (panel + PAD)
            axes = figure.add_axes(box(left, top, image.shape[1], image.shape[0]))  # 1 image px = 1 figure px
            axes.imshow(image, interpolation="none", aspect="auto")
            axes.set_axis_off()
            text(left + panel / 2, top + panel + CAPTION / 2, caption, ha="center", fontsize=7.5)
        top += panel + CAPTION
    text(PAD, top + FOOTER / 2, footer, ha="left", fontsize=6.5, color="#444444")
    figure.savefig(out, dpi=DPI, format="png", metadata={"Software": None})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval.figure",
                                     description="Grid of test tiles: SAR | opt_v1 | opt_v2 | opt_v3 | control | real.")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--data", type=Path, help="dataset folder (test split, else all); default: the bundled "
                                                  "data/bigearthnet")
    parser.add_argument("--preset", default="mini", help="mini (embedded), hub, a pipeline folder or repo@rev")
    parser.add_argument("--tiles", type=int, help="draw only the first N tiles (sorted by name)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=DEFAULT_SCALE, help="nearest-neighbour upscaling per panel")
    parser.add_argument("--include-cloudy", action="store_true", help="draw cloudy pairs too")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gac_pipeline.io import InputError  # imported here so `--help` is instant

    try:
        out = render_grid(args.out, args.data, args.preset, tiles=args.tiles, seed=args.seed, scale=args.scale,
                          include_cloudy=args.include_cloudy)
    except (InputError, ValueError, FileNotFoundError, RuntimeError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
