"""Locating and checking checkpoint folders, locally or on the Hugging Face Hub.

Safety rules for anything loaded: weights only as safetensors (terratorch's own ``.pt`` base
weights are loaded by terratorch with ``weights_only=True``, never by us); no pickles; every
file listed in ``pipeline_config.json`` must match its recorded SHA-256; no path may leave
the checkpoint folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PIPELINE_CONFIG = "pipeline_config.json"
PICKLE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt")
ALLOWED_PATTERNS = ["*.json", "*.safetensors", "*.md"]


class CheckpointSafetyError(RuntimeError):
    """A checkpoint contains something we refuse to load."""


def resolve_checkpoint(repo_id_or_dir: str | Path, revision: str | None = None) -> Path:
    """Return a local folder for a checkpoint: the folder itself, or a Hub snapshot.

    Hub downloads honour ``revision`` (pin a commit hash for reproducibility), the local cache
    and ``HF_HUB_OFFLINE=1``; only JSON and safetensors files are fetched.
    """
    local = Path(repo_id_or_dir).expanduser()
    if local.is_dir():
        return local.resolve()
    if local.exists() or str(repo_id_or_dir).startswith((".", "/", "~")):
        raise FileNotFoundError(f"{repo_id_or_dir}: not a checkpoint folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(repo_id_or_dir), revision=revision, allow_patterns=ALLOWED_PATTERNS))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise RuntimeError(
            f"{repo_id_or_dir}@{revision or 'main'}: not in the local Hugging Face cache and the Hub is "
            f"unreachable or refused ({type(error).__name__}); use the embedded 'mini' preset"
        ) from error


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing anything that resolves outside ``root``."""
    root = root.resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise CheckpointSafetyError(f"{relative}: path escapes the checkpoint folder {root}")
    return target


def verify_folder(root: Path, recorded: dict[str, str]) -> None:
    """Refuse pickles and check every recorded file's hash."""
    for path in root.rglob("*"):
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise CheckpointSafetyError(f"{path.relative_to(root)}: pickled files are refused; use safetensors")
    for relative, expected in recorded.items():
        path = inside(root, relative)
        if not path.is_file():
            raise CheckpointSafetyError(f"{relative}: listed in {PIPELINE_CONFIG} but missing")
        if sha256(path) != expected:
            raise CheckpointSafetyError(f"{relative}: SHA-256 does not match {PIPELINE_CONFIG} (corrupt or altered)")
