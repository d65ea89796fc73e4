"""What the Translate tab draws, without Gradio: panels, change and error maps, the spectrum at a pixel.

One function, :func:`render`, draws every image panel of a run for one composite (see
``gac_pipeline.display`` for the composites, the fixed stretches and the colour scales). Images
are upscaled by a whole factor with ``np.repeat`` (nearest neighbour), so a 120-px tile shows
at least ``MIN_PANEL_PX`` wide with sharp pixels; the browser is told not to smooth them either
(``PIXELATED_CSS``). The clicked pixel is marked on every panel with a small crosshair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib
import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from gac_pipeline.bands import BAND_CENTRES_NM, REFLECTANCE_SCALE, S2L2A_BANDS
from gac_pipeline.display import (
    COMPOSITES,
    LUT_SIZE,
    NODATA_COLOUR,
    change_map,
    colour_bar,
    composite,
    error_map,
    scale,
)

MIN_PANEL_PX = 384
PANEL_WIDTH_PX = MIN_PANEL_PX + 8  # a panel's least width on the page: the image plus its border
DEFAULT_COMPOSITE = "true colour"
STAGES = ("opt_v1", "opt_v2", "opt_v3")
OPTICAL = (*STAGES, "reference")
# Change map key -> (after, before): what a stage changed in the image it was given.
CHANGES = {"change_v2": ("opt_v2", "opt_v1"), "change_v3": ("opt_v3", "opt_v2")}
ERRORS = {f"error_{stage}": stage for stage in STAGES}  # |stage - reference|
# The uncertainty map: std of opt_v3 over the test-time variants (mean of B02, B03, B04, B08, in DN)
# on a fixed sequential scale, so maps of different runs compare. Above the top: the top colour.
UNCERTAINTY_SCALE_DN = (0.0, 200.0)
UNCERTAINTY_STAGE = "opt_v3"
UNCERTAINTY_LUT = np.round(matplotlib.colormaps["magma"].resampled(LUT_SIZE)(np.arange(LUT_SIZE))[:, :3] * 255
                           ).astype(np.uint8)
# Every image panel, in the order the UI lays them out.
PANELS = ("sar", *OPTICAL, *CHANGES, *ERRORS, "uncertainty")

CROSSHAIR_COLOUR = (255, 0, 255)  # magenta: in none of the colour maps, visible on dark and light
PIXELATED_CSS = ".pixelated img, .pixelated canvas { image-rendering: pixelated; }"
# Spectrum chart: one colour per image, the same in every chart.
TRACE_COLOURS = {"opt_v1": "#1f77b4", "opt_v2": "#ff7f0e", "opt_v3": "#2ca02c", "reference": "#111111"}


@dataclass(frozen=True)
class Run:
    """What the panels of one translation are drawn from (kept in a ``gr.State``, never re-run).

    Attributes:
        sar: uint8 (H, W, 3) SAR false colour.
        dn: (12, H, W) float32 S2L2A DN of "opt_v1", "opt_v2", "opt_v3" and "reference" (None
            without a reference).
        mean: (12, H, W) float32 mean over the test-time variants of "opt_v1", "opt_v2", "opt_v3"
            (empty without the uncertainty option).
        std: (H, W) float32 std over the variants of ``UNCERTAINTY_STAGE`` in DN, or None.
    """

    sar: np.ndarray
    dn: dict[str, np.ndarray | None]
    mean: dict[str, np.ndarray] | None = None
    std: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.sar.shape[:2]

    @property
    def factor(self) -> int:
        return upscale_factor(*self.shape)

    @property
    def has_reference(self) -> bool:
        return self.dn.get("reference") is not None

    @property
    def has_uncertainty(self) -> bool:
        return self.std is not None

    def shown(self, show_mean: bool = False) -> Run:
        """This run, or with ``show_mean`` (and variant means) one whose opt_v1/2/3 are the means over variants."""
        if not (show_mean and self.mean):
            return self
        return Run(sar=self.sar, dn={**self.dn, **{key: self.mean[key] for key in STAGES if key in self.mean}},
                   mean=self.mean, std=self.std)


def run_of(result: dict) -> Run:
    """The run kept for redrawing, from a ``handlers.translate`` result."""
    std = (result.get("std") or {}).get(UNCERTAINTY_STAGE)
    return Run(sar=result["images"]["sar"], dn=result["dn"], mean=result.get("mean") or None, std=std)


def uncertainty_map(std: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) of an (H, W) std in DN on ``UNCERTAINTY_SCALE_DN`` (magma: dark = certain); NaN black."""
    low, high = UNCERTAINTY_SCALE_DN
    values = np.asarray(std, dtype=np.float64)
    position = np.clip(np.nan_to_num((values - low) / (high - low), nan=0.0), 0.0, 1.0)
    image = UNCERTAINTY_LUT[np.round(position * (LUT_SIZE - 1)).astype(np.intp)]
    image[np.isnan(values)] = NODATA_COLOUR
    return image


def uncertainty_bar(width: int = MIN_PANEL_PX, height: int = 12) -> np.ndarray:
    """uint8 (height + 14, width, 3): the uncertainty map's colours, its low, middle and high (DN) below."""
    low, high = UNCERTAINTY_SCALE_DN
    bar = uncertainty_map(np.linspace(low, high, width)[None].repeat(height, axis=0))
    image = Image.new("RGB", (width, height + 14), "white")
    image.paste(Image.fromarray(bar), (0, 0))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=10)
    for value, x, anchor in ((low, 0, "la"), ((low + high) / 2, width // 2, "ma"), (high, width - 1, "ra")):
        draw.text((x, height + 2), f"{value:g}" + (" DN" if value == high else ""), fill="black", font=font,
                  anchor=anchor)
    return np.asarray(image)


def upscale_factor(height: int, width: int) -> int:
    """The whole factor that makes the longer side at least ``MIN_PANEL_PX`` (1 for large scenes)."""
    return max(1, math.ceil(MIN_PANEL_PX / max(height, width, 1)))


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale of an (H, W, C) image: every pixel becomes a factor x factor block."""
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def mark_pixel(image: np.ndarray, pixel: tuple[int, int], factor: int) -> np.ndarray:
    """A copy of an upscaled image with a crosshair around source pixel ``(row, column)``.

    The pixel itself stays visible: a frame just outside its block and four arms that stop
    short of it. Lines are 2 px wide on upscaled images, so they survive the browser scaling
    the panel down a little.
    """
    marked = image.copy()
    height, width = marked.shape[:2]
    width_px = 2 if factor >= 3 else 1
    row, column = pixel
    top, left = row * factor - width_px, column * factor - width_px  # the frame, just outside the block
    bottom, right = (row + 1) * factor, (column + 1) * factor
    arm = max(2 * factor, 6)
    middle_row = row * factor + (factor - width_px) // 2
    middle_column = column * factor + (factor - width_px) // 2

    def paint(row0: int, row1: int, column0: int, column1: int) -> None:
        marked[max(row0, 0):max(min(row1, height), 0), max(column0, 0):max(min(column1, width), 0)] = CROSSHAIR_COLOUR

    paint(top, top + width_px, left, right + width_px)  # frame
    paint(bottom, bottom + width_px, left, right + width_px)
    paint(top, bottom + width_px, left, left + width_px)
    paint(top, bottom + width_px, right, right + width_px)
    paint(middle_row, middle_row + width_px, left - arm, left)  # arms
    paint(middle_row, middle_row + width_px, right + width_px, right + width_px + arm)
    paint(top - arm, top, middle_column, middle_column + width_px)
    paint(bottom + width_px, bottom + width_px + arm, middle_column, middle_column + width_px)
    return marked


def render(run: Run, name: str = DEFAULT_COMPOSITE, pixel: tuple[int, int] | None = None,
           show_mean: bool = False) -> dict[str, np.ndarray | None]:
    """Every image panel of a run (``PANELS``) for composite ``name``: upscaled, the pixel marked.

    ``show_mean``: draw opt_v1/2/3 (and the change and error maps) from the means over the
    test-time variants, when the run has them.

    Returns:
        Panel key -> uint8 (H * f, W * f, 3), f = ``run.factor``; the reference and the error
        maps are None without a reference, the uncertainty map None without the uncertainty option.
    """
    run = run.shown(show_mean)
    dn, reference = run.dn, run.dn.get("reference")
    images: dict[str, np.ndarray | None] = {"sar": run.sar}
    images.update({key: None if dn.get(key) is None else composite(dn[key], name) for key in OPTICAL})
    images.update({key: change_map(dn[after], dn[before], name) for key, (after, before) in CHANGES.items()})
    images.update({key: None if reference is None else error_map(dn[stage], reference, name)
                   for key, stage in ERRORS.items()})
    images["uncertainty"] = None if run.std is None else uncertainty_map(run.std)
    shown = {}
    for key in PANELS:
        image = images[key]
        if image is not None:
            image = upscale(image, run.factor)
            if pixel is not None:
                image = mark_pixel(image, pixel, run.factor)
        shown[key] = image
    return shown


def colour_bars(name: str) -> dict[str, np.ndarray]:
    """The change and error maps' colour bars for composite ``name``, as wide as a panel."""
    return {kind: colour_bar(kind, name, width=MIN_PANEL_PX) for kind in ("change", "error")}


def describe(name: str) -> str:
    """One line on a composite: its bands and fixed stretch, and the scales of its change and error maps."""
    unit = "NDVI" if name == "NDVI" else "reflectance, mean of the three bands"
    change_low, change_high = scale("change", name)
    _, error_high = scale("error", name)
    return (f"**{name}**: {COMPOSITES[name]} (fixed stretch). Change maps: after - before, "
            f"{change_low:g}..{change_high:g} ({unit}), blue = fell, red = rose. "
            f"Error maps: |stage - reference|, 0..{error_high:g}.")


def pixel_at(index, run: Run) -> tuple[int, int]:
    """The source ``(row, column)`` under a click at displayed ``index`` = (x, y), clipped to the scene."""
    x, y = (int(value) for value in index)
    height, width = run.shape
    return min(max(y // run.factor, 0), height - 1), min(max(x // run.factor, 0), width - 1)


def spectrum_figure(run: Run, pixel: tuple[int, int]) -> go.Figure:
    """Plotly chart of the 12-band reflectance of each optical image at ``pixel``, x = band centres (nm).

    One trace per image that exists (opt_v1, opt_v2, opt_v3, the reference); NaN (nodata) is a gap.
    """
    row, column = pixel
    figure = go.Figure()
    for key in OPTICAL:
        dn = run.dn.get(key)
        if dn is None:
            continue
        values = np.asarray(dn[:, row, column], dtype=np.float64) / REFLECTANCE_SCALE
        figure.add_trace(go.Scatter(
            x=list(BAND_CENTRES_NM), y=[None if math.isnan(v) else float(v) for v in values], name=key,
            mode="lines+markers", line={"color": TRACE_COLOURS[key], "dash": "dot" if key == "reference" else None},
            customdata=list(S2L2A_BANDS),
            hovertemplate="%{customdata} (%{x} nm): %{y:.4f}<extra>" + key + "</extra>",
        ))
    figure.update_layout(
        title=f"Spectrum at row {row}, column {column}", xaxis_title="band centre wavelength (nm)",
        yaxis_title="reflectance", hovermode="x unified", margin={"l": 50, "r": 10, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.2}, height=360,
    )
    return figure
