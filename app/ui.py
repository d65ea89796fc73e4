"""The Gradio interface: layout and wiring only; the work happens in ``app.handlers`` and ``app.evaluation``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import gradio as gr
import numpy as np

from app import evaluation, examples, handlers, panels
from gac_pipeline.data import BIOMES
from gac_pipeline.display import COMPOSITES

logger = logging.getLogger(__name__)

INTRO = """# GAC — Sentinel-1 SAR → Sentinel-2 optical, stage by stage
Upload a Sentinel-1 GeoTIFF (2 bands: VV, VH in dB) and, optionally, the real Sentinel-2 L2A
tile on the same grid to score the result, or click a bundled example. Every optical panel shows
the same composite with one fixed stretch, so brightness differences between panels are real.
"""

# Event handlers that run models share one slot: they use every CPU core (or the one GPU).
MODELS_QUEUE = "models"
# GPU time asked for a re-run of the evaluation: every variant on every bundled test pair.
EVALUATION_GPU_S = 300

# What the image slider compares: (left, right) keys into the rendered panels. The last two
# are kept so that clients written for earlier versions (which passed them) still work.
SLIDER_CHOICES = {
    "opt_v1 ↔ opt_v2 (what stage 2 changed)": ("opt_v1", "opt_v2"),
    "opt_v2 ↔ opt_v3 (what stage 3 changed)": ("opt_v2", "opt_v3"),
    "opt_v3 ↔ reference": ("opt_v3", "reference"),
    "opt_v1 ↔ opt_v3 (what stages 2+3 changed)": ("opt_v1", "opt_v3"),
    "SAR ↔ opt_v3": ("sar", "opt_v3"),
}

# SAR units radio: label -> value for ``read_s1(units=...)``.
UNITS_CHOICES = [("from metadata (else dB)", "auto"), ("dB", "db"), ("linear power", "linear")]

STAGE_CHOICES = [("1 TerraMind S1→S2", "1"), ("2 Prithvi refiner", "2"), ("3 TerraMind grounding", "3")]

# Panel key -> (label, elem_id) of its gr.Image, in layout order.
PANEL_LABELS = {
    "sar": ("SAR false colour (R VV, G VH, B VV−VH)", "sar-image"),
    "opt_v1": ("opt_v1 (stage 1)", "opt-v1-image"),
    "opt_v2": ("opt_v2 (stage 2)", "opt-v2-image"),
    "opt_v3": ("opt_v3 (stage 3)", "opt-v3-image"),
    "reference": ("Reference (real S2)", "reference-image"),
    "change_v2": ("What stage 2 changed: opt_v2 − opt_v1", "change-v2-image"),
    "change_v3": ("What stage 3 changed: opt_v3 − opt_v2", "change-v3-image"),
    "error_opt_v1": ("Error |opt_v1 − reference|", "error-v1-image"),
    "error_opt_v2": ("Error |opt_v2 − reference|", "error-v2-image"),
    "error_opt_v3": ("Error |opt_v3 − reference|", "error-v3-image"),
    "uncertainty": ("Uncertainty of opt_v3: std over 8 test-time variants (DN)", "uncertainty-image"),
}
# What every redraw of a run fills, in this order: the panels, the slider pair, the error-map note,
# the error maps' column (shown only with a reference) and the uncertainty column (only with the option).
DRAWN = (*panels.PANELS, "slider", "error_note", "error_column", "uncertainty_column")
# The outputs of ``/translate``, in order: those of the first release, then the ones added since.
TRANSLATE_OUTPUTS = ("sar", "opt_v1", "opt_v2", "opt_v3", "reference", "slider", "table", "summary", "files", "run",
                     *panels.CHANGES, *panels.ERRORS, "error_note", "warning", "spectrum", "pixel", "error_column",
                     "uncertainty", "uncertainty_column")
NO_REFERENCE_NOTE = ("Error maps and the opt_v3 ↔ reference comparison need a reference: upload the real Sentinel-2 "
                     "L2A tile (or pick an example).")


def on_gpu(duration: int = 60) -> Callable[[Callable], Callable]:
    """``spaces.GPU(duration=...)`` where the ``spaces`` package imports (Hugging Face ZeroGPU), else a no-op.

    On ZeroGPU a GPU is attached only while a decorated function runs, for at most
    ``duration`` seconds; elsewhere ``spaces`` is absent (or its decorator does nothing), so
    the app runs the same on CPU machines. Presets are loaded on CPU; ``handlers.translate``
    moves the pipeline to ``handlers.run_device()`` inside the decorated call, where ZeroGPU's
    CUDA exists (https://huggingface.co/docs/hub/spaces-zerogpu).
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


def draw(run: panels.Run | None, composite: str, slider_choice: str,
         pixel: tuple[int, int] | None = None, show_mean: bool = False) -> dict:
    """Everything drawn from a run for a composite (keys ``DRAWN``); all empty before the first run.

    ``show_mean``: opt_v1/2/3 (and what is drawn from them) are the means over the test-time variants.
    """
    if run is None:
        return dict.fromkeys(DRAWN) | {"error_note": "", "error_column": gr.Column(visible=True),
                                       "uncertainty_column": gr.Column(visible=False)}
    images = panels.render(run, composite or panels.DEFAULT_COMPOSITE, pixel, show_mean=bool(show_mean))
    return images | {"slider": _slider_value(images, slider_choice),
                     "error_note": "" if run.has_reference else NO_REFERENCE_NOTE,
                     "error_column": gr.Column(visible=run.has_reference),
                     "uncertainty_column": gr.Column(visible=run.has_uncertainty)}


def _drawn(run, composite, slider_choice, pixel=None, show_mean=False) -> tuple:
    drawn = draw(run, composite, slider_choice, pixel, show_mean)
    return tuple(drawn[key] for key in DRAWN)


def show_composite(run, composite, slider_choice, pixel, show_mean=False):
    """Redraw every panel of the last run for another composite (no model runs), with its scale and colour bars."""
    bars = panels.colour_bars(composite)
    return (*_drawn(run, composite, slider_choice, pixel, show_mean), panels.describe(composite), bars["change"],
            bars["error"])


def show_slider(run, composite, slider_choice, pixel, show_mean=False):
    """The slider pair for another choice."""
    return draw(run, composite, slider_choice, pixel, show_mean)["slider"]


def show_variant_mean(run, composite, slider_choice, pixel, show_mean):
    """Swap opt_v1/2/3 for their means over the test-time variants, or back (no model runs); the spectrum too."""
    spectrum = None if run is None or pixel is None else panels.spectrum_figure(run.shown(show_mean), pixel)
    return (*_drawn(run, composite, slider_choice, pixel, show_mean), spectrum)


def select_pixel(run, composite, slider_choice, evt: gr.SelectData, show_mean=False):
    """A click on any panel: mark the pixel on every panel and chart the spectra there."""
    if run is None or evt is None or evt.index is None:
        return gr.skip(), *(gr.skip() for _ in DRAWN), gr.skip()
    pixel = panels.pixel_at(evt.index, run)
    return (pixel, *_drawn(run, composite, slider_choice, pixel, show_mean),
            panels.spectrum_figure(run.shown(show_mean), pixel))


@on_gpu()
def run_translate(s1_file, reference_file, preset, month, biome, seed, stages, slider_choice, units="auto",
                  timesteps=None, composite=panels.DEFAULT_COMPOSITE, uncertainty=False, show_mean=False,
                  progress=gr.Progress(track_tqdm=True)):  # noqa: B008  (how Gradio injects progress)
    """Click handler (API name ``/translate``): runs the translation (or takes it from the cache) and draws it.

    New parameters and outputs are appended, with defaults, so clients written for older versions
    still work.

    Args:
        s1_file: Uploaded SAR GeoTIFF path.
        reference_file: Uploaded reference GeoTIFF path, or None.
        preset: A preset of the dropdown, or typed: a checkpoint folder or a Hub repo id ``user/name@<commit>``
            (``handlers.check_preset``). Its first use loads it (a Hub checkpoint downloads; the progress bar
            says "loading ..."); a failure is a one-line ``gr.Error`` and earlier results stay on the page.
        month: 1..12, or 0 for the month in the file's metadata.
        biome: One of ``BIOMES``.
        seed: Random seed.
        stages: Stage keys to run, "1" always included.
        slider_choice: Key of ``SLIDER_CHOICES``.
        units: "auto" (from the file's metadata), "db" or "linear".
        timesteps: Diffusion steps of generate-mode stages (1..50); None keeps the preset's.
        composite: Key of ``display.COMPOSITES`` the optical panels and maps are drawn in.
        uncertainty: Run the chain on ``handlers.UNCERTAINTY_VARIANTS`` test-time variants and
            show opt_v3's per-pixel uncertainty (about 8x the model time); off by default.
        show_mean: With ``uncertainty``, draw opt_v1/2/3 as the means over the variants.
        progress: Gradio progress tracker (also follows tqdm bars).

    Returns:
        The values of ``TRANSLATE_OUTPUTS``: SAR, opt_v1, opt_v2, opt_v3 and reference panels,
        the slider pair, the metrics table, the summary Markdown, the output files, the run
        (``gr.State``), then the two change maps, the three error maps, the error-map note, the
        month/biome warning, the (cleared) spectrum chart, the (cleared) pixel (``gr.State``),
        the error maps' column (shown with a reference), the uncertainty map (None without
        ``uncertainty``) and its column. API clients do not receive the states and the columns.

    Raises:
        gr.Error: with a one-line message, for bad input or any failure.
    """
    try:
        preset = handlers.check_preset(preset)
        result = examples.translate(s1_file, reference_file, preset, month, biome, seed, stages,
                                    units=None if units in (None, "auto") else units, timesteps=timesteps,
                                    uncertainty=handlers.UNCERTAINTY_VARIANTS if uncertainty else 0,
                                    progress=lambda fraction, desc: progress(fraction, desc=desc))
    except handlers.AppError as error:
        raise gr.Error(str(error), print_exception=False) from None
    except Exception as error:  # a bug must still reach the user as one line, not a traceback
        logger.exception("translate failed")
        raise gr.Error(f"unexpected error ({type(error).__name__}): {handlers.one_line(error)}") from None
    run = panels.run_of(result)
    values = draw(run, composite, slider_choice, show_mean=show_mean) | {
        "table": result["table"], "summary": handlers.summary_markdown(result), "files": result["files"], "run": run,
        "warning": handlers.conditioning_warning(result["notes"]), "spectrum": None, "pixel": None}
    return tuple(values[key] for key in TRANSLATE_OUTPUTS)


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


def _panel(key: str) -> gr.Image:
    """One image panel: PNG (lossless), shown at least ``panels.MIN_PANEL_PX`` wide, pixels kept sharp."""
    label, elem_id = PANEL_LABELS[key]
    return gr.Image(label=label, type="numpy", format="png", interactive=False, elem_id=elem_id, scale=0,
                    min_width=panels.PANEL_WIDTH_PX, elem_classes=["pixelated"], buttons=["download", "fullscreen"])


def _colour_bar(kind: str, label: str) -> gr.Image:
    """The colour bar of the change or error maps (redrawn with the composite)."""
    return gr.Image(panels.colour_bars(panels.DEFAULT_COMPOSITE)[kind], label=label, type="numpy", format="png",
                    interactive=False, height=90, width=panels.MIN_PANEL_PX + 16, buttons=[],
                    elem_id=f"{kind}-colour-bar")


def build_demo(presets: Sequence[str] | None = None,
               results_dir: str | Path = evaluation.RESULTS_DIR, warm_examples: bool = True) -> gr.Blocks:
    """Build the app.

    Args:
        presets: Choices of the preset dropdown; the first is the default (None:
            ``handlers.preset_choices()``, i.e. ``GAC_PRESET`` or a Space's config). Tests pass a saved
            checkpoint folder here. Users may also type a Hub repo id ``user/name@<commit>`` or a
            checkpoint folder on the server: loading checks every file against its recorded hash and
            refuses pickles (``gac_pipeline.hub``), and the app keeps only the last few loaded
            (``handlers.LOADED_MAX``).
        results_dir: The evaluation results the Evaluation tab shows (read once, here; no model runs).
        warm_examples: Fill the result cache with every example (default preset and options) in
            a background thread when the first page opens (``examples.start_warm_up``).

    Returns:
        The Blocks app (not launched).
    """
    presets = list(presets) if presets is not None else handlers.preset_choices()
    # delete_cache: drop cached uploads/outputs older than an hour, checked hourly.
    with gr.Blocks(title="GAC SAR → optical", delete_cache=(3600, 3600)) as demo:
        # Panels are upscaled on the server; this keeps the browser from smoothing them (also in full screen).
        gr.HTML("", head=f"<style>{panels.PIXELATED_CSS}</style>", js_on_load=None, padding=False)
        gr.Markdown(INTRO)
        with gr.Tab("Translate"):
            _translate_tab(presets, warm_examples, demo)
        with gr.Tab("Evaluation"):
            _evaluation_tab(results_dir)
    return demo


def _translate_tab(presets: list[str], warm_examples: bool, demo: gr.Blocks) -> None:
    """Inputs and examples; the panels, change and error maps, slider, spectrum, table and downloads."""
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            s1_file = gr.File(label="Sentinel-1 GeoTIFF (VV, VH dB)", file_types=[".tif", ".tiff"],
                              type="filepath", elem_id="sar-file")
            reference_file = gr.File(label="Reference Sentinel-2 L2A GeoTIFF (optional)",
                                     file_types=[".tif", ".tiff"], type="filepath")
            preset = gr.Dropdown(presets, value=presets[0], label="Preset", allow_custom_value=True,
                                 info="mini: embedded, offline, small model trained on the bundled "
                                      "train + validation tiles. hub: needs the Hub. Or type a Hub repo id "
                                      "user/name@commit (or a checkpoint folder): loaded on first use.")
            with gr.Row():
                month = gr.Number(0, label="Month", precision=0, minimum=0, maximum=12,
                                  info="0 = from the file's metadata/name", elem_id="month")
                seed = gr.Number(0, label="Seed", precision=0, minimum=0)
            biome = gr.Dropdown(list(BIOMES), value="unknown", label="Biome")
            stages = gr.CheckboxGroup(STAGE_CHOICES, value=["1", "2", "3"], label="Stages",
                                      info="a skipped stage passes its input through")
            units = gr.Radio(UNITS_CHOICES, value="auto", label="SAR units")
            steps, steps_info = _timesteps_default(presets[0])
            timesteps = gr.Number(steps, label="Timesteps (TerraMind generate mode)", precision=0,
                                  minimum=1, maximum=handlers.MAX_TIMESTEPS, info=steps_info)
            uncertainty = gr.Checkbox(False, label=f"Uncertainty ({handlers.UNCERTAINTY_VARIANTS} test-time variants)",
                                      info="runs the chain on the 8 rotations/flips of the SAR (about 8x slower) and "
                                           "maps where they disagree", elem_id="uncertainty")
            button = gr.Button("Translate", variant="primary", elem_id="translate-button")
        with gr.Column(scale=2):
            bundled = examples.examples()
            gallery = gr.Gallery(
                [(example.thumbnail, example.caption) for example in bundled], format="png", columns=5, height="auto",
                allow_preview=False, object_fit="cover", elem_id="examples", elem_classes=["pixelated"],
                label=f"Examples: the {len(bundled)} bundled BigEarthNet test-split tiles (left half SAR, right half "
                      "the real optical); click one to translate it", buttons=[])

    warning = gr.Markdown("", elem_id="conditioning-warning")
    with gr.Row(equal_height=True):
        composite = gr.Radio(list(COMPOSITES), value=panels.DEFAULT_COMPOSITE, label="Composite (every optical "
                             "panel, the change and error maps)", elem_id="composite", scale=1)
        description = gr.Markdown(panels.describe(panels.DEFAULT_COMPOSITE), elem_id="composite-description")
    images: dict[str, gr.Image] = {}
    with gr.Row(elem_id="panels"):
        for key in ("sar", *panels.OPTICAL):
            images[key] = _panel(key)
    with gr.Row():
        for key in panels.CHANGES:
            images[key] = _panel(key)
    change_bar = _colour_bar("change", "Change scale (after − before; 0 = white)")
    error_note = gr.Markdown("", elem_id="error-note")
    with gr.Column() as error_column:
        with gr.Row():
            for key in panels.ERRORS:
                images[key] = _panel(key)
        error_bar = _colour_bar("error", "Error scale (|stage − reference|)")
    with gr.Column(visible=False) as uncertainty_column, gr.Row():
        images["uncertainty"] = _panel("uncertainty")
        with gr.Column():
            gr.Image(panels.uncertainty_bar(), label="Uncertainty scale (DN, fixed; dark = the variants agree)",
                     type="numpy", format="png", interactive=False, height=90, width=panels.MIN_PANEL_PX + 16,
                     buttons=[], elem_id="uncertainty-colour-bar")
            show_mean = gr.Checkbox(False, label="Show the mean over variants in opt_v1/2/3 (and their maps)",
                                    elem_id="show-mean")
    with gr.Row():
        with gr.Column(min_width=panels.PANEL_WIDTH_PX):
            slider_choice = gr.Radio(list(SLIDER_CHOICES), value=next(iter(SLIDER_CHOICES)), label="Compare",
                                     elem_id="slider-choice")
            slider = gr.ImageSlider(label="Slide to compare", type="numpy", format="png", interactive=False,
                                    elem_classes=["pixelated"])
        spectrum = gr.Plot(label="Spectrum at a pixel: click any panel", elem_id="spectrum",
                           min_width=panels.PANEL_WIDTH_PX)
    summary = gr.Markdown(label="Run summary")
    table = gr.Dataframe(label="Metrics (one row per stage, baseline and ceiling)", interactive=False,
                         wrap=True, elem_id="metrics-table")
    files = gr.File(label="GeoTIFFs (input georeference) + metrics.json", file_count="multiple",
                    interactive=False)
    run_state = gr.State()  # the last run's arrays: composites and the spectrum redraw from them
    pixel_state = gr.State()  # the clicked (row, column), marked on every panel

    translate_inputs = [s1_file, reference_file, preset, month, biome, seed, stages, slider_choice, units,
                        timesteps, composite, uncertainty, show_mean]
    components = images | {"slider": slider, "table": table, "summary": summary, "files": files, "run": run_state,
                           "error_note": error_note, "warning": warning, "spectrum": spectrum, "pixel": pixel_state,
                           "error_column": error_column, "uncertainty_column": uncertainty_column}
    translate_outputs = [components[key] for key in TRANSLATE_OUTPUTS]
    drawn = [components[key] for key in DRAWN]
    redraw = [run_state, composite, slider_choice, pixel_state, show_mean]

    def redraw_as_chosen(event):
        """After a run, draw it once more with the composite, slider pair and mean option shown now: the
        user may have changed them while it ran (the run drew with those of the click)."""
        event.success(show_composite, inputs=redraw, outputs=[*drawn, description, change_bar, error_bar],
                      api_visibility="private", queue=False)

    redraw_as_chosen(button.click(run_translate, inputs=translate_inputs, outputs=translate_outputs,
                                  api_name="translate", concurrency_id=MODELS_QUEUE))

    def pick_example(evt: gr.SelectData):
        """Fill the form with a clicked example: its SAR, its reference, month from the file, its biome."""
        pair = bundled[evt.index].pair
        return str(pair.s1_path), str(pair.s2_path), 0, pair.biome

    # A clicked example fills the form, then runs (answered from the cache once warm).
    redraw_as_chosen(gallery.select(pick_example, outputs=[s1_file, reference_file, month, biome],
                                    api_visibility="private", queue=False)
                     .then(run_translate, inputs=translate_inputs, outputs=translate_outputs,
                           api_visibility="private", concurrency_id=MODELS_QUEUE))
    composite.change(show_composite, inputs=redraw, outputs=[*drawn, description, change_bar, error_bar],
                     api_visibility="private")
    slider_choice.change(show_slider, inputs=redraw, outputs=slider, api_visibility="private")
    show_mean.change(show_variant_mean, inputs=redraw, outputs=[*drawn, spectrum], api_visibility="private")
    for image in images.values():
        image.select(select_pixel, inputs=[run_state, composite, slider_choice, show_mean],
                     outputs=[pixel_state, *drawn, spectrum], api_visibility="private")
    preset.change(_timesteps_update, inputs=preset, outputs=timesteps, api_visibility="private")
    if warm_examples:
        def warm_up() -> None:
            examples.start_warm_up(presets[0], [example.pair for example in bundled])

        demo.load(warm_up, api_visibility="private", queue=False)


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
                          label="Tiles", info="clear tiles are the headline; tiles with cloud, snow or open water are reported apart",
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
