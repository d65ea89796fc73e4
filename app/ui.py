"""The Gradio interface: layout and wiring only; the work happens in ``app.handlers``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import gradio as gr
import numpy as np

from app import handlers
from gac_pipeline.data import BIOMES

logger = logging.getLogger(__name__)

INTRO = """# GAC — Sentinel-1 SAR → Sentinel-2 optical, stage by stage
Upload a Sentinel-1 GRD GeoTIFF (2 bands: VV, VH in dB) and, optionally, the real Sentinel-2 L2A
tile on the same grid to score the result. Each stage's output is shown with the same fixed
stretch (B04/B03/B02, DN 0..3000), so brightness differences between panels are real.
"""

EVALUATION_NOTE = """## Evaluation
The ablation evaluation (stage 1 only vs 1+2 vs 1+2+3, against the mean-image baseline on the
bundled test split) arrives with the training milestone. The current `mini` preset is
**untrained**, so no quality numbers are reported here yet.
"""

# What the image slider compares: (left, right) keys into the result's images.
SLIDER_CHOICES = {
    "opt_v1 ↔ opt_v3 (what stages 2+3 changed)": ("opt_v1", "opt_v3"),
    "opt_v3 ↔ reference": ("opt_v3", "reference"),
    "SAR ↔ opt_v3": ("sar", "opt_v3"),
}

# SAR units radio: label -> value for ``read_s1(units=...)``.
UNITS_CHOICES = [("from metadata (else dB)", "auto"), ("dB", "db"), ("linear power", "linear")]

STAGE_CHOICES = [("1 TerraMind S1→S2", "1"), ("2 Prithvi refiner", "2"), ("3 TerraMind grounding", "3")]


def _slider_value(images: dict | None, choice: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The pair of images the slider shows, or None when one side is missing (no reference)."""
    if not images:
        return None
    left, right = SLIDER_CHOICES.get(choice, next(iter(SLIDER_CHOICES.values())))
    if images.get(left) is None or images.get(right) is None:
        return None
    return images[left], images[right]


def run_translate(s1_file, reference_file, preset, month, biome, seed, stages, slider_choice, units="auto",
                  progress=gr.Progress(track_tqdm=True)):  # noqa: B008  (how Gradio injects progress)
    """Click handler (API name ``/translate``): runs ``handlers.translate`` and fills the outputs.

    Args:
        s1_file: Uploaded SAR GeoTIFF path.
        reference_file: Uploaded reference GeoTIFF path, or None.
        preset: Preset name or folder (one of the dropdown's choices).
        month: 1..12, or 0 for the month in the file's metadata.
        biome: One of ``BIOMES``.
        seed: Random seed.
        stages: Stage keys to run, "1" always included.
        slider_choice: Key of ``SLIDER_CHOICES``.
        units: "auto" (from the file's metadata), "db" or "linear".
        progress: Gradio progress tracker (also follows tqdm bars).

    Returns:
        SAR, opt_v1, opt_v2, opt_v3 and reference images, the slider pair, the metrics table,
        the summary Markdown, the output files and the images for ``gr.State``.

    Raises:
        gr.Error: with a one-line message, for bad input or any failure.
    """
    try:
        result = handlers.translate(s1_file, reference_file, preset, month, biome, seed, stages,
                                    units=None if units in (None, "auto") else units,
                                    progress=lambda fraction, desc: progress(fraction, desc=desc))
    except handlers.AppError as error:
        raise gr.Error(str(error), print_exception=False) from None
    except Exception as error:  # a bug must still reach the user as one line, not a traceback
        logger.exception("translate failed")
        raise gr.Error(f"unexpected error ({type(error).__name__}): {handlers.one_line(error)}") from None
    images = result["images"]
    return (
        images["sar"], images["opt_v1"], images["opt_v2"], images["opt_v3"], images["reference"],
        _slider_value(images, slider_choice), result["table"], handlers.summary_markdown(result),
        result["files"], images,
    )


def _examples() -> tuple[list[list], list[str]]:
    """Bundled test-split pairs as example rows (SAR, reference, month 0 = from file, biome) and labels."""
    pairs = handlers.example_pairs(3)
    rows = [[str(p.s1_path), str(p.s2_path), 0, p.biome] for p in pairs]
    labels = [f"{p.biome}, month {p.month or '?'}: {p.name}" for p in pairs]
    return rows, labels


def build_demo(presets: Sequence[str] = handlers.PRESET_CHOICES) -> gr.Blocks:
    """Build the app.

    Args:
        presets: Choices of the preset dropdown; the first is the default. Tests pass a saved
            checkpoint folder here. Custom values are not accepted from the browser, so users
            cannot make the server load arbitrary folders or Hub repos.

    Returns:
        The Blocks app (not launched).
    """
    presets = list(presets)
    # delete_cache: drop cached uploads/outputs older than an hour, checked hourly.
    with gr.Blocks(title="GAC SAR → optical", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Translate"):
            with gr.Row():
                with gr.Column(scale=1):
                    s1_file = gr.File(label="Sentinel-1 GeoTIFF (VV, VH dB)", file_types=[".tif", ".tiff"],
                                      type="filepath")
                    reference_file = gr.File(label="Reference Sentinel-2 L2A GeoTIFF (optional)",
                                             file_types=[".tif", ".tiff"], type="filepath")
                    preset = gr.Dropdown(presets, value=presets[0], label="Preset",
                                         info="mini: embedded, offline (untrained). hub: needs the Hub.")
                    with gr.Row():
                        month = gr.Number(0, label="Month", precision=0, minimum=0, maximum=12,
                                          info="0 = from the file's metadata/name")
                        seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                    biome = gr.Dropdown(list(BIOMES), value="unknown", label="Biome")
                    stages = gr.CheckboxGroup(STAGE_CHOICES, value=["1", "2", "3"], label="Stages",
                                              info="a skipped stage passes its input through")
                    units = gr.Radio(UNITS_CHOICES, value="auto", label="SAR units")
                    button = gr.Button("Translate", variant="primary")
                with gr.Column(scale=2):
                    with gr.Row():
                        sar_image = gr.Image(label="SAR false colour (R VV, G VH, B VV−VH)", type="numpy",
                                             interactive=False)
                        reference_image = gr.Image(label="Reference (real S2, RGB)", type="numpy",
                                                   interactive=False)
                    with gr.Row():
                        v1_image = gr.Image(label="opt_v1 (stage 1)", type="numpy", interactive=False)
                        v2_image = gr.Image(label="opt_v2 (stage 2)", type="numpy", interactive=False)
                        v3_image = gr.Image(label="opt_v3 (stage 3)", type="numpy", interactive=False)
            example_rows, example_labels = _examples()
            gr.Examples(example_rows, inputs=[s1_file, reference_file, month, biome], example_labels=example_labels,
                        label="Bundled BigEarthNet test-split tiles (click one, then Translate)")
            with gr.Row():
                with gr.Column():
                    slider_choice = gr.Radio(list(SLIDER_CHOICES), value=next(iter(SLIDER_CHOICES)),
                                             label="Compare")
                    slider = gr.ImageSlider(label="Slide to compare", type="numpy", interactive=False)
                with gr.Column():
                    summary = gr.Markdown(label="Run summary")
            table = gr.Dataframe(label="Metrics (one row per stage, baseline and ceiling)", interactive=False,
                                 wrap=True)
            files = gr.File(label="GeoTIFFs (input georeference) + metrics.json", file_count="multiple",
                            interactive=False)
            images_state = gr.State()  # the last result's images, so the slider can switch pairs

            button.click(
                run_translate,
                inputs=[s1_file, reference_file, preset, month, biome, seed, stages, slider_choice, units],
                outputs=[sar_image, v1_image, v2_image, v3_image, reference_image, slider, table, summary,
                         files, images_state],
                api_name="translate",
            )
            slider_choice.change(_slider_value, inputs=[images_state, slider_choice], outputs=slider,
                                 api_visibility="private")
        with gr.Tab("Evaluation"):
            gr.Markdown(EVALUATION_NOTE)
    return demo

