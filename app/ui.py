"""The Gradio interface: layout and wiring only; the work happens in ``app.handlers`` and ``app.evaluation``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import gradio as gr
import numpy as np

from app import evaluation, handlers
from gac_pipeline.data import BIOMES

logger = logging.getLogger(__name__)

INTRO = """# GAC — Sentinel-1 SAR → Sentinel-2 optical, stage by stage
Upload a Sentinel-1 GRD GeoTIFF (2 bands: VV, VH in dB) and, optionally, the real Sentinel-2 L2A
tile on the same grid to score the result. Each stage's output is shown with the same fixed
stretch (B04/B03/B02, DN 0..3000), so brightness differences between panels are real.
"""

# Event handlers that run models share one slot: they use every CPU core (or the one GPU).
MODELS_QUEUE = "models"
# GPU time asked for a re-run of the evaluation: every variant on every bundled test pair.
EVALUATION_GPU_S = 300

# What the image slider compares: (left, right) keys into the result's images.
SLIDER_CHOICES = {
    "opt_v1 ↔ opt_v3 (what stages 2+3 changed)": ("opt_v1", "opt_v3"),
    "opt_v3 ↔ reference": ("opt_v3", "reference"),
    "SAR ↔ opt_v3": ("sar", "opt_v3"),
}

# SAR units radio: label -> value for ``read_s1(units=...)``.
UNITS_CHOICES = [("from metadata (else dB)", "auto"), ("dB", "db"), ("linear power", "linear")]

STAGE_CHOICES = [("1 TerraMind S1→S2", "1"), ("2 Prithvi refiner", "2"), ("3 TerraMind grounding", "3")]


def on_gpu(duration: int = 60) -> Callable[[Callable], Callable]:
    """``spaces.GPU(duration=...)`` where the ``spaces`` package imports (Hugging Face ZeroGPU), else a no-op.

    On ZeroGPU a GPU is attached only while a decorated function runs, for at most
    ``duration`` seconds; elsewhere ``spaces`` is absent (or its decorator does nothing), so
    the app runs the same on CPU machines.
    """
    def decorate(function: Callable) -> Callable:
        try:
            import spaces
        except ImportError:
            return function
        return spaces.GPU(duration=duration)(function)

    return decorate


def _slider_value(images: dict | None, choice: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The pair of images the slider shows, or None when one side is missing (no reference)."""
    if not images:
        return None
    left, right = SLIDER_CHOICES.get(choice, next(iter(SLIDER_CHOICES.values())))
    if images.get(left) is None or images.get(right) is None:
        return None
    return images[left], images[right]


@on_gpu()
def run_translate(s1_file, reference_file, preset, month, biome, seed, stages, slider_choice, units="auto",
                  timesteps=None, progress=gr.Progress(track_tqdm=True)):  # noqa: B008  (how Gradio injects progress)
    """Click handler (API name ``/translate``): runs ``handlers.translate`` and fills the outputs.

    New parameters are appended with defaults, so clients written for older versions still work.

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
        timesteps: Diffusion steps of generate-mode stages (1..50); None keeps the preset's.
        progress: Gradio progress tracker (also follows tqdm bars).

    Returns:
        SAR, opt_v1, opt_v2, opt_v3 and reference images, the slider pair, the metrics table,
        the summary Markdown, the output files and the images for ``gr.State``.

    Raises:
        gr.Error: with a one-line message, for bad input or any failure.
    """
    try:
        result = handlers.translate(s1_file, reference_file, preset, month, biome, seed, stages,
                                    units=None if units in (None, "auto") else units, timesteps=timesteps,
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


def _timesteps_default(preset: str) -> tuple[int, str]:
    """The timesteps box's value and info for a preset: its default steps, and whether they matter."""
    steps, uses_generate = handlers.preset_timesteps(preset)
    if uses_generate is None:
        info = f"diffusion steps of TerraMind generate-mode stages, 1..{handlers.MAX_TIMESTEPS}"
    elif uses_generate:
        info = f"diffusion steps of this preset's generate-mode stages, 1..{handlers.MAX_TIMESTEPS} (more = slower)"
    else:
        info = "this preset's stages run in regress mode: timesteps have no effect"
    return steps, info


def _timesteps_update(preset: str) -> gr.Number:
    """Show the newly chosen preset's default timesteps."""
    steps, info = _timesteps_default(preset)
    return gr.Number(steps, info=info)


def _subset_choices(view: evaluation.EvaluationView) -> gr.Radio:
    """The subset selector for a view: its subsets, the one on show selected."""
    return gr.Radio([(evaluation.SUBSETS.get(subset, subset), subset) for subset in view.subsets],
                    value=view.subset, visible=bool(view.subsets))


def _subset_outputs(view: evaluation.EvaluationView) -> tuple:
    """What changes with the subset: table, paired differences, scatter, bar charts, per-tile chart."""
    figures = view.figures or {}
    return (view.table, view.paired, view.scatter, *(figures.get(metric) for metric in evaluation.CHART_METRICS),
            view.per_tile)


def _evaluation_outputs(view: evaluation.EvaluationView) -> tuple:
    """A view as the Evaluation tab's outputs (see ``_evaluation_tab``), charts shown only with results."""
    return (view.markdown, _subset_choices(view), *_subset_outputs(view), view.directory,
            gr.Column(visible=view.table is not None))


@on_gpu(duration=EVALUATION_GPU_S)
def run_evaluation(per_tile_metric, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
    """Re-run the ablation on the bundled test pairs into a temporary folder and show it.

    The committed results stay untouched; the re-run's tqdm bar over tiles drives the progress bar.
    The view opens on the headline subset (clear tiles).
    """
    progress(0.0, desc="loading the preset and the test pairs")
    try:
        results = evaluation.rerun()
    except handlers.AppError as error:
        raise gr.Error(str(error), print_exception=False) from None
    except Exception as error:  # a bug must still reach the user as one line, not a traceback
        logger.exception("evaluation re-run failed")
        raise gr.Error(f"evaluation failed ({type(error).__name__}): {handlers.one_line(error)}") from None
    return _evaluation_outputs(evaluation.view_of(results, per_tile_metric=per_tile_metric, rerun=True))


def show_subset(directory, subset, per_tile_metric):
    """Show the results on show for another tile subset (clear, cloudy, all)."""
    try:
        view = evaluation.subset_view(directory, subset, per_tile_metric)
    except handlers.AppError as error:
        raise gr.Error(str(error), print_exception=False) from None
    if view is None:
        return (None,) * (4 + len(evaluation.CHART_METRICS))
    return _subset_outputs(view)


def show_per_tile(directory, metric, subset=None):
    """Redraw the per-tile distribution for another metric of the results on show."""
    try:
        return evaluation.per_tile_view(directory, metric, subset)
    except handlers.AppError as error:
        raise gr.Error(str(error), print_exception=False) from None


def _examples() -> tuple[list[list], list[str]]:
    """Bundled test-split pairs as example rows (SAR, reference, month 0 = from file, biome) and labels."""
    pairs = handlers.example_pairs(3)
    rows = [[str(p.s1_path), str(p.s2_path), 0, p.biome] for p in pairs]
    labels = [f"{p.biome}, month {p.month or '?'}: {p.name}" for p in pairs]
    return rows, labels


def build_demo(presets: Sequence[str] = handlers.PRESET_CHOICES,
               results_dir: str | Path = evaluation.RESULTS_DIR) -> gr.Blocks:
    """Build the app.

    Args:
        presets: Choices of the preset dropdown; the first is the default. Tests pass a saved
            checkpoint folder here. Custom values are not accepted from the browser, so users
            cannot make the server load arbitrary folders or Hub repos.
        results_dir: The evaluation results the Evaluation tab shows (read once, here; no model runs).

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
                                      type="filepath", elem_id="sar-file")
                    reference_file = gr.File(label="Reference Sentinel-2 L2A GeoTIFF (optional)",
                                             file_types=[".tif", ".tiff"], type="filepath")
                    preset = gr.Dropdown(presets, value=presets[0], label="Preset",
                                         info="mini: embedded, offline, small model trained on the bundled "
                                              "train + validation tiles. hub: needs the Hub.")
                    with gr.Row():
                        month = gr.Number(0, label="Month", precision=0, minimum=0, maximum=12,
                                          info="0 = from the file's metadata/name")
                        seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                    biome = gr.Dropdown(list(BIOMES), value="unknown", label="Biome")
                    stages = gr.CheckboxGroup(STAGE_CHOICES, value=["1", "2", "3"], label="Stages",
                                              info="a skipped stage passes its input through")
                    units = gr.Radio(UNITS_CHOICES, value="auto", label="SAR units")
                    steps, steps_info = _timesteps_default(presets[0])
                    timesteps = gr.Number(steps, label="Timesteps (TerraMind generate mode)", precision=0,
                                          minimum=1, maximum=handlers.MAX_TIMESTEPS, info=steps_info)
                    button = gr.Button("Translate", variant="primary", elem_id="translate-button")
                with gr.Column(scale=2):
                    with gr.Row():
                        sar_image = gr.Image(label="SAR false colour (R VV, G VH, B VV−VH)", type="numpy",
                                             interactive=False, elem_id="sar-image")
                        reference_image = gr.Image(label="Reference (real S2, RGB)", type="numpy",
                                                   interactive=False, elem_id="reference-image")
                    with gr.Row():
                        v1_image = gr.Image(label="opt_v1 (stage 1)", type="numpy", interactive=False,
                                            elem_id="opt-v1-image")
                        v2_image = gr.Image(label="opt_v2 (stage 2)", type="numpy", interactive=False,
                                            elem_id="opt-v2-image")
                        v3_image = gr.Image(label="opt_v3 (stage 3)", type="numpy", interactive=False,
                                            elem_id="opt-v3-image")
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
                                 wrap=True, elem_id="metrics-table")
            files = gr.File(label="GeoTIFFs (input georeference) + metrics.json", file_count="multiple",
                            interactive=False)
            images_state = gr.State()  # the last result's images, so the slider can switch pairs

            button.click(
                run_translate,
                inputs=[s1_file, reference_file, preset, month, biome, seed, stages, slider_choice, units,
                        timesteps],
                outputs=[sar_image, v1_image, v2_image, v3_image, reference_image, slider, table, summary,
                         files, images_state],
                api_name="translate",
                concurrency_id=MODELS_QUEUE,
            )
            slider_choice.change(_slider_value, inputs=[images_state, slider_choice], outputs=slider,
                                 api_visibility="private")
            preset.change(_timesteps_update, inputs=preset, outputs=timesteps, api_visibility="private")
        with gr.Tab("Evaluation"):
            _evaluation_tab(results_dir)
    return demo


def _evaluation_tab(results_dir: str | Path) -> None:
    """The ablation table, paired differences, charts and per-tile distributions of committed results.

    The results are read once when the app is built; the re-run button writes elsewhere. The
    tab opens on the headline subset (clear tiles); a radio switches to cloudy or all tiles.
    """
    view = evaluation.build_view(results_dir)
    figures = view.figures or {}
    about = gr.Markdown(view.markdown, elem_id="evaluation-about")
    with gr.Column(visible=view.table is not None) as results_column:
        subset = gr.Radio([(evaluation.SUBSETS.get(name, name), name) for name in view.subsets], value=view.subset,
                          label="Tiles", info="clear tiles are the headline; cloudy tiles are reported apart",
                          visible=bool(view.subsets), elem_id="evaluation-subset")
        table = gr.Dataframe(view.table, label="Ablation: mean [95% interval, bootstrap over scene clusters] over "
                             "tiles; baselines and control first, then the stage subsets", interactive=False,
                             wrap=True, elem_id="ablation-table")
        paired = gr.Dataframe(view.paired, label="Paired differences a − b: mean over tiles of the per-tile "
                              "difference [95% interval, bootstrap over scene clusters]; an interval that excludes 0 "
                              "is a difference the data supports", interactive=False, wrap=True,
                              elem_id="paired-table")
        scatter = gr.Plot(view.scatter, label="PSNR against sharpness", show_label=False)
        plots = []
        for row in (evaluation.CHART_METRICS[:2], evaluation.CHART_METRICS[2:]):
            with gr.Row():
                plots += [gr.Plot(figures.get(metric), label=evaluation.METRICS[metric][0], show_label=False)
                          for metric in row]
        per_tile_metric = gr.Dropdown([(label, key) for key, label in evaluation.TILE_METRICS.items()],
                                      value="psnr", label="Per-tile distribution of")
        per_tile_plot = gr.Plot(view.per_tile, label="Per-tile distribution", show_label=False)
    directory = gr.State(view.directory)  # where the results on show are, for the subset radio and dropdown
    rerun_button = gr.Button("Re-run evaluation on the bundled test pairs")
    gr.Markdown("Re-running evaluates the bundled test pairs with the default preset into a temporary folder "
                "(the committed results are not changed) and shows those results here.")

    subset_outputs = [table, paired, scatter, *plots, per_tile_plot]
    # .input (a user's choice), not .change: a re-run sets the radio itself, with its own outputs.
    subset.input(show_subset, inputs=[directory, subset, per_tile_metric], outputs=subset_outputs,
                 api_visibility="private")
    per_tile_metric.change(show_per_tile, inputs=[directory, per_tile_metric, subset], outputs=per_tile_plot,
                           api_visibility="private")
    rerun_button.click(run_evaluation, inputs=per_tile_metric,
                       outputs=[about, subset, *subset_outputs, directory, results_column],
                       api_visibility="private", concurrency_id=MODELS_QUEUE)
