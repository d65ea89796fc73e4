"""Publishing: ``python -m gac_pipeline publish model|space REPO_ID ...``.

``publish model`` writes a checkpoint with ``save_pretrained`` (plus the preset's ``references/``
and ``training.json``) and a model card, then uploads it; ``publish space`` stages a
self-contained Gradio Space (the app, this package, ``presets/mini``, the bundled tiles the app
reads, runtime requirements and a Space card) and uploads it. ``--dry-run OUT`` only stages.

An upload makes the repo mirror the staged folder (files it does not hold are deleted, except
``.gitattributes``) and prints the commit: pin it (``REPO_ID@commit``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from gac_pipeline.presets import PRESETS, preset_location

REPO_ROOT = Path(__file__).resolve().parent.parent
EVAL_RESULTS = REPO_ROOT / "eval" / "results"
DATA_DIR = REPO_ROOT / "data" / "bigearthnet"
TRAINING_FILE = "training.json"
SPACE_CONFIG = "space_config.json"  # {"preset": "a,b"}: read by the app like GAC_PRESET (first = default)
LICENSE = "apache-2.0"
TAGS = ["gac", "remote-sensing", "earth-observation", "sentinel-1", "sentinel-2", "sar", "sar-to-optical"]
HEADLINE_SUBSET = "clear"
CARD_METRICS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "structure_r": "structure_r"}
VARIANT_NAMES = {"mean_baseline": "mean-image baseline", "linear_baseline": "linear baseline (per-pixel least squares)",
                 "unet_control": "one-network UNet control", "v1+unsharp": "opt_v1 + unsharp mask (a filter: stage 2's yardstick)",
                 "v1": "opt_v1 (stage 1)",
                 "v1+v2": "opt_v2 (stages 1+2)", "v1+v3": "stages 1+3 (refiner skipped)",
                 "v1+v2+v3": "opt_v3 (stages 1+2+3, the pipeline's output)"}
# What the Space runs: the app and its packages, plus the files the app reads.
SPACE_CODE = ("app.py", "app", "gac_pipeline", "eval/__init__.py", "eval/__main__.py", "eval/ablation.py")
SPACE_RESULTS = ("summary.csv", "per_tile.csv", "paired.csv", "meta.json")  # the Evaluation tab
SPACE_SPLITS = ("train", "test")  # test: the examples and the evaluation re-run; train: the mean-image baseline
SPACE_DATA_FILES = ("README.md", "LICENSE.configilm")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")
# What a pipeline on TerraMind-1.0-base (stages 1 and 3, generate mode) and Prithvi-EO-2.0-300M
# (stage 2) needs, like the hub preset: measured by `python -m bench.hub_memory` on the same
# architectures with random weights (README, Speed and memory).
HUB_SIZE_BASE = "ibm-esa-geospatial/TerraMind-1.0-base"
HUB_SIZE_HARDWARE = (
    "Stages 1 and 3 run TerraMind-1.0-base in generate mode with one shared copy of the S2L2A "
    "tokenizer, stage 2 runs Prithvi-EO-2.0-300M: 1,020 M parameters. The process peaks at 6.0 GB "
    "of RAM, so it needs at least 8 GB (a `cpu-basic` Space, 16 GB, is enough). On 2 CPU cores "
    "one 224-px window at 10 diffusion steps takes 47 s (92 CPU seconds), almost all of it in "
    "stages 1 and 3: use a GPU Space (`t4-small`, `zero-a10g`) for more than single tiles.")


# ------------------------------------------------------------------------------------ model


def stage_model(preset: str, out: Path, repo_id: str, eval_dir: Path = EVAL_RESULTS) -> Path:
    """Write ``preset`` as a Hub checkpoint into the empty folder ``out``; returns ``out``."""
    from gac_pipeline import hub
    from gac_pipeline.presets import load_preset
    from gac_pipeline.references import References

    source = hub.resolve_checkpoint(*preset_location(preset))
    pipeline = load_preset(preset)
    out = _empty_folder(out)
    pipeline.save_pretrained(out)
    references = References.load(source)  # verifies the stored hashes
    if references is not None:
        references.save(out)
    if (source / TRAINING_FILE).is_file():
        shutil.copy2(source / TRAINING_FILE, out / TRAINING_FILE)
    training = json.loads((out / TRAINING_FILE).read_text()) if (out / TRAINING_FILE).is_file() else None
    model_card(pipeline.config, repo_id, training, evaluation(preset, pipeline.config, eval_dir)).save(out / "README.md")
    return out


def evaluation(preset: str, config, eval_dir: Path = EVAL_RESULTS) -> tuple[dict, list[dict]] | None:
    """(meta, headline-subset rows of summary.csv) when ``eval_dir`` evaluated this preset, else None.

    The evaluation must name the same preset (``meta.json``'s ``preset``, same folder or
    repo@revision) and describe the same weights (its description and trained flag).
    """
    meta_path, summary_path = Path(eval_dir) / "meta.json", Path(eval_dir) / "summary.csv"
    if not (meta_path.is_file() and summary_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    if (_where(str(meta.get("preset"))) != _where(preset) or meta.get("preset_description") != config.description
            or meta.get("trained") != config.trained):
        return None
    subset = meta.get("headline_subset", HEADLINE_SUBSET)
    with open(summary_path, newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["subset"] == subset]
    return meta, rows


def model_card(config, repo_id: str, training: dict | None, evaluated: tuple[dict, list[dict]] | None):
    """The model card: front matter from ``ModelCardData``, then what it is, how to load it,
    how it was trained and how it scores."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    meta, rows = evaluated or ({}, [])
    output = next((row for row in rows if row["variant"] == "v1+v2+v3"), None)  # the pipeline's output
    eval_results = None
    if output is not None:
        eval_results = [EvalResult(
            task_type="image-to-image", task_name="Sentinel-1 SAR to Sentinel-2 L2A translation",
            # No Hub dataset holds these tiles: a descriptive name, not a Hub id.
            dataset_type="bigearthnet-s1-s2-pairs", dataset_name=_dataset_name(meta),
            dataset_split=meta.get("split", "test"), dataset_config=meta.get("headline_subset", HEADLINE_SUBSET),
            metric_type=metric, metric_name=name, metric_value=round(float(output[metric]), 4),
            ) for metric, name in CARD_METRICS.items()]
    data = ModelCardData(model_name=config.name, license=LICENSE, base_model=_base_repos(config) or None,
                         pipeline_tag="image-to-image", tags=TAGS, eval_results=eval_results)
    sections = [f"# {config.name}", _description(config), _loading(repo_id), _bases(config),
                _hardware(_base_repos(config)), _training(training), _results(evaluated), _licences()]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def _description(config) -> str:
    parts = [part.strip() for part in config.description.split(" | ") if part.strip()] or ["no description"]
    state = "trained" if config.trained else "**UNTRAINED (random weights)**"
    return (f"{parts[0]} [{state}]\n\n" + "".join(f"- {part}\n" for part in parts[1:]) +
            "\nGAC translates a Sentinel-1 GRD scene (VV, VH in dB) into 12-band Sentinel-2 L2A "
            "(DN = reflectance x 10000, bands B01..B12) in three stages: stage 1 (TerraMind "
            "architecture) turns SAR into `opt_v1`, stage 2 (Prithvi architecture, month/biome "
            "conditioned) refines it into `opt_v2`, stage 3 (TerraMind, sees SAR and `opt_v2`) "
            "grounds it into `opt_v3`, the output.")


def _loading(repo_id: str) -> str:
    return f"""## How to load

With the GAC code (`gac_pipeline`); pin the commit `publish model` printed (or one from this
repo's history) so the weights cannot change under you:

```python
from gac_pipeline.pipeline import GACPipeline

pipeline = GACPipeline.from_pretrained("{repo_id}", revision="<commit>")
# or: from gac_pipeline.presets import load_preset; pipeline = load_preset("{repo_id}@<commit>")
out = pipeline.translate(s1_db, month=6)  # s1_db: (2, H, W) VV, VH in dB -> out.opt_v1 / opt_v2 / opt_v3
```

```bash
python -m gac_pipeline translate S1.tif --out outputs --preset {repo_id}@<commit>
```

Loading fetches only JSON, safetensors and Markdown, checks every file against the SHA-256 in
`pipeline_config.json` and refuses pickles."""


def _bases(config) -> str:
    lines = [f"- {stage}: `{f['repo']}` / `{f['filename']}` @ `{f['revision']}`"
             f"{'' if f.get('pinned') else ' (not pinned to a commit)'}"
             for stage, files in sorted(config.base_models.items()) for f in files]
    if not lines:
        return "## Base models\n\nNone: every weight here was trained from random initialisation."
    return "## Base models\n\nFetched from the Hub at load time, at these revisions:\n\n" + "\n".join(lines)


def _hardware(base_repos: list[str]) -> str:
    if HUB_SIZE_BASE in base_repos:
        return "## Hardware\n\n" + HUB_SIZE_HARDWARE
    return ("## Hardware\n\nNo foundation-model weights: the pipeline is small and runs on a CPU "
            "(a `cpu-basic` Space is enough).")


def _training(training: dict | None) -> str:
    if training is None:
        return "## Training\n\nNo `training.json` is stored with this checkpoint."
    steps = ", ".join(f"{name} {count}" for name, count in training.get("chosen_steps", {}).items())
    lines = [f"- command: `{training['command']}` (seed {training.get('seed', '?')})" if "command" in training else "",
             f"- training tiles: {training['train_tiles']}" if "train_tiles" in training else "",
             f"- steps, chosen by {len(training['folds'])}-fold cross-validation grouped by scene: {steps}"
             if training.get("folds") and steps else (f"- steps: {steps}" if steps else ""),
             f"- cross-validation score: {training['cv_score']}" if "cv_score" in training else "",
             f"- training-split tiles left out (not clear land): {len(training['left_out'])}" if training.get("left_out") else ""]
    return ("## Training\n\nFrom `training.json` (stored here with the fold lists and every "
            "cross-validation curve):\n\n" + "\n".join(line for line in lines if line))


def _results(evaluated: tuple[dict, list[dict]] | None) -> str:
    if evaluated is None:
        return ("## Evaluation\n\nNo evaluation summary of these weights was found: run "
                "`python -m eval --preset <this checkpoint>` in the GAC repository.")
    meta, rows = evaluated
    header = "| variant | n tiles | " + " | ".join(CARD_METRICS.values()) + " |"
    table = [header, "|" + "---|" * (len(CARD_METRICS) + 2)]
    for row in rows:
        cells = [f"{float(row[m]):.3f} [{float(row[m + '_lo']):.3f}, {float(row[m + '_hi']):.3f}]"
                 for m in CARD_METRICS]
        table.append(f"| {VARIANT_NAMES.get(row['variant'], row['variant'])} | {row['n']} | {' | '.join(cells)} |")
    boot = meta.get("bootstrap", {})
    return (f"## Evaluation\n\n{_dataset_name(meta)}; mean over tiles [95% interval, bootstrap over "
            f"scene clusters, {boot.get('samples', '?')} samples]. Baselines and the control are fitted on "
            "the same training tiles. The `model-index` above reports the pipeline's output "
            f"(`opt_v3`).\n\n" + "\n".join(table) + f"\n\nFrom `eval/results/summary.csv` "
            f"(`{meta.get('command', 'python -m eval')}`, {meta.get('created', '')}). PSNR, SSIM on "
            f"bands {meta.get('bands', 'B02,B03,B04,B08')}; structure_r: Pearson r of the prediction's "
            "and the real tile's luminance (does it draw the scene's layout).")


def _licences() -> str:
    return ("## Licence and data\n\nWeights: Apache-2.0. Trained and evaluated on BigEarthNet "
            "Sentinel-1/Sentinel-2 pairs bundled with GAC (CDLA-Permissive-1.0; BigEarthNet, TU Berlin; "
            "contains modified Copernicus Sentinel data). The card names no Hub dataset: the tiles are "
            "not published as one.")


def _dataset_name(meta: dict) -> str:
    subset = meta.get("headline_subset", HEADLINE_SUBSET)
    count = meta.get("bootstrap", {}).get("subsets", {}).get(subset, {})
    return (f"BigEarthNet {meta.get('split', 'test')} split bundled with GAC, {subset} tiles "
            f"({count.get('tiles', '?')} tiles in {count.get('clusters', '?')} scene clusters)")


def _base_repos(config) -> list[str]:
    return list(dict.fromkeys(f["repo"] for files in config.base_models.values() for f in files))


def _where(preset: str) -> str:
    """A preset name, folder or repo@revision as one comparable string."""
    location, revision = preset_location(preset)
    path = Path(location).expanduser()
    return str(path.resolve()) if path.is_dir() else f"{location}@{revision or 'main'}"


# ------------------------------------------------------------------------------------ space


def space_model(model: str) -> tuple[str, list[str]]:
    """(preset the Space loads, Hub repos it loads) for a preset name or ``repo[@revision]``.

    A Hub repo is pinned to the commit its revision names now (read from the Hub or the cache).
    """
    from gac_pipeline import hub
    from gac_pipeline.configs import PipelineConfig

    if model in PRESETS:
        return model, _base_repos(PipelineConfig.load(PRESETS[model] / hub.PIPELINE_CONFIG))
    location, revision = preset_location(model)
    if Path(location).expanduser().exists() or str(location).startswith((".", "/", "~")):
        raise ValueError(f"{model}: a Space cannot load a local folder; publish it with `publish model` "
                         "and pass REPO_ID@commit")
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(str(location), hub.PIPELINE_CONFIG, revision=revision))
    except hub.hub_errors() as error:
        raise RuntimeError(f"{model}: cannot read its {hub.PIPELINE_CONFIG} from the Hub or the cache "
                           f"({type(error).__name__})") from error
    commit = hub.commit_of(path, hub.HubFile(str(location), hub.PIPELINE_CONFIG))
    return f"{location}@{commit}", [str(location), *_base_repos(PipelineConfig.load(path))]


def stage_space(model: str, out: Path, repo_id: str) -> Path:
    """Write a self-contained Space folder into the empty folder ``out``; returns ``out``."""
    preset, models = space_model(model)
    out = _empty_folder(out)
    for name in SPACE_CODE:
        source, target = REPO_ROOT / name, out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=IGNORE)
        else:
            shutil.copy2(source, target)
    for name in dict.fromkeys(["mini", *([model] if model in PRESETS else [])]):
        shutil.copytree(PRESETS[name], out / "presets" / name, ignore=IGNORE)
    (out / "eval" / "results").mkdir(parents=True)
    for name in SPACE_RESULTS:
        if (EVAL_RESULTS / name).is_file():
            shutil.copy2(EVAL_RESULTS / name, out / "eval" / "results" / name)
    _stage_data(out / "data" / "bigearthnet")
    shutil.copy2(REPO_ROOT / "requirements.txt", out / "requirements.txt")
    presets = preset if preset == "mini" else f"{preset},mini"
    (out / SPACE_CONFIG).write_text(json.dumps({"preset": presets}, indent=2) + "\n")
    space_card(repo_id, preset, models).save(out / "README.md")
    return out


def _stage_data(out: Path) -> None:
    """The bundled pairs of ``SPACE_SPLITS`` in their layout, with ``index.csv`` reduced to them."""
    from gac_pipeline.data import INDEX_FILE, list_pairs

    pairs = [pair for split in SPACE_SPLITS for pair in list_pairs(DATA_DIR, split)]
    for pair in pairs:
        shutil.copytree(pair.directory, out / pair.directory.relative_to(DATA_DIR), ignore=IGNORE)
    names = {pair.name for pair in pairs}
    with open(DATA_DIR / INDEX_FILE, newline="") as source, open(out / INDEX_FILE, "w", newline="") as target:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(target, reader.fieldnames)
        writer.writeheader()
        writer.writerows(row for row in reader if row["pair"] in names)
    for name in SPACE_DATA_FILES:
        shutil.copy2(DATA_DIR / name, out / name)


def space_card(repo_id: str, preset: str, models: list[str]):
    from huggingface_hub import SpaceCard, SpaceCardData

    data = SpaceCardData(
        title="GAC SAR to Optical", sdk="gradio", sdk_version=version("gradio"),
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}", app_file="app.py", license=LICENSE,
        models=models or None, tags=TAGS, emoji="🛰️", colorFrom="indigo", colorTo="green",
        short_description="Sentinel-1 SAR to Sentinel-2 optical in three inspectable stages")
    loads = (f"`{preset}` (default) and the embedded `mini`" if preset != "mini"
             else "the embedded `mini` pipeline (in this Space, no download)")
    body = f"""# GAC: Sentinel-1 SAR to Sentinel-2 optical, stage by stage

Upload a Sentinel-1 GRD GeoTIFF (VV, VH in dB) or pick a bundled BigEarthNet test tile: GAC
translates it into 12-band Sentinel-2 L2A in three stages and shows what each stage did
(`opt_v1` fidelity, `opt_v2` realism, `opt_v3` SAR grounding), with metrics against the real tile.

This Space (`{repo_id}`) runs {loads}; the presets offered are in `{SPACE_CONFIG}` (the
`GAC_PRESET` environment variable, a comma-separated list, overrides it). It was staged by
`python -m gac_pipeline publish space` from the GAC repository. Bundled tiles: BigEarthNet
(CDLA-Permissive-1.0; TU Berlin), modified Copernicus Sentinel data.

{_hardware(models)}"""
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


# ------------------------------------------------------------------------------------ upload


def upload(folder: Path, repo_id: str, *, repo_type: str = "model", private: bool = False, branch: str | None = None,
           api=None, message: str = "Publish with python -m gac_pipeline publish"):
    """Create the repo (if needed) and the branch, and commit ``folder`` so that the repo mirrors it."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    extra = {"space_sdk": "gradio"} if repo_type == "space" else {}
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **extra)
    if branch:
        api.create_branch(repo_id, repo_type=repo_type, branch=branch, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=folder, revision=branch,
                             commit_message=message, delete_patterns="*")


def publish(args: argparse.Namespace, api=None) -> dict:
    """Run ``publish model`` or ``publish space``; returns what it prints."""
    if args.target == "space" and args.hardware:
        from huggingface_hub import SpaceHardware

        SpaceHardware(args.hardware)  # an unknown flavour fails before any work
    stage = ((lambda out: stage_model(args.source, out, args.repo_id)) if args.target == "model"
             else (lambda out: stage_space(args.model, out, args.repo_id)))
    if args.dry_run is not None:
        out = stage(args.dry_run)
        return {"staged": str(out), "files": sum(path.is_file() for path in out.rglob("*"))}
    with tempfile.TemporaryDirectory(prefix="gac_publish_") as temporary:
        out = stage(Path(temporary) / "staged")
        repo_type = "model" if args.target == "model" else "space"
        info = upload(out, args.repo_id, repo_type=repo_type, private=args.private,
                      branch=getattr(args, "branch", None), api=api)
    report = {"commit": info.oid, "pin": f"{args.repo_id}@{info.oid}", "url": info.commit_url}
    if args.target == "space" and args.hardware:
        from huggingface_hub import HfApi

        runtime = (api or HfApi()).request_space_hardware(args.repo_id, args.hardware)
        report["hardware_requested"] = runtime.requested_hardware
    return report


def add_parser(commands) -> None:
    """``publish model`` and ``publish space`` under the CLI's subcommands."""
    parser = commands.add_parser("publish", help="publish a checkpoint or a Space to the Hugging Face Hub")
    targets = parser.add_subparsers(dest="target", required=True)
    model = targets.add_parser("model", help="checkpoint + model card (save_pretrained layout)")
    model.add_argument("repo_id", help="e.g. me/gac-mini")
    model.add_argument("--from", dest="source", required=True, help="mini, hub, a checkpoint folder or repo@rev")
    model.add_argument("--branch", help="commit to this branch (created from main if missing)")
    space = targets.add_parser("space", help="a self-contained Gradio Space running the app")
    space.add_argument("repo_id", help="e.g. me/gac-demo")
    space.add_argument("--model", required=True, help="the Space's default preset: mini, hub or REPO_ID@commit")
    space.add_argument("--hardware", help="request this Space hardware, e.g. cpu-basic, zero-a10g, t4-small")
    for sub in (model, space):
        sub.add_argument("--private", action="store_true", help="create the repo private")
        sub.add_argument("--dry-run", type=Path, metavar="OUT", help="only write the folder to OUT (new or empty)")


def main(args: argparse.Namespace) -> int:
    try:
        report = publish(args)
    except (ValueError, OSError, RuntimeError) as error:  # OSError includes the Hub's HTTP errors
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


def _empty_folder(out: Path) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    return out
