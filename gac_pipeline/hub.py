"""Locating and checking checkpoint folders, locally or on the Hugging Face Hub.

Safety rules for anything loaded: our weights only as safetensors; the foundation models'
published ``.pt`` files only through ``torch.load(weights_only=True)``; no other pickles; every
file listed in ``pipeline_config.json`` must match its recorded SHA-256, and a file it does not
list is refused (see :func:`verify_folder` for the few known extras); no path may leave the
checkpoint folder.

Foundation-model weights (TerraMind, its S2L2A tokenizer, Prithvi) are ``HubFile``s: fetched by
us at the revision the stage config names (a 40-hex commit pins them; terratorch itself always
downloads ``main``), then loaded so that every learned weight of the model must come from the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

PIPELINE_CONFIG = "pipeline_config.json"
PICKLE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt")
ALLOWED_PATTERNS = ["*.json", "*.safetensors", "*.md"]
COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
# Top-level names a checkpoint folder may hold besides the files its listing records: the listings
# themselves (pipeline_config.json, and references.json when ``References.load`` checks references/),
# the model card, the training record, and references/, checked against its own list before any use.
UNLISTED_ALLOWED = (PIPELINE_CONFIG, "references.json", "README.md", "training.json", "references")

logger = logging.getLogger(__name__)


class CheckpointSafetyError(RuntimeError):
    """A checkpoint contains something we refuse to load."""


def resolve_checkpoint(repo_id_or_dir: str | Path, revision: str | None = None) -> Path:
    """Return a local folder for a checkpoint: the folder itself, or a Hub snapshot.

    Hub downloads honour ``revision`` (pin a commit hash for reproducibility), the local cache
    and ``HF_HUB_OFFLINE=1``; only JSON, safetensors and Markdown files are fetched.
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
    """``root / relative``, refusing anything that resolves outside ``root``.

    Symlinks are followed, so a link out of the folder is refused too, except the Hugging Face
    cache's own: in a snapshot (``<repo>/snapshots/<commit>/``) every file is a symlink to
    ``<repo>/blobs/<hash>``. Those are accepted, and returned as the path inside the snapshot.
    """
    root = root.resolve()
    target = (root / relative).resolve()
    if target == root or root in target.parents:
        return target
    lexical = Path(os.path.normpath(root / relative))
    snapshot = next((folder for folder in (root, *root.parents) if folder.parent.name == "snapshots"), None)
    if (snapshot is not None and snapshot in lexical.parents
            and target.parent == (snapshot.parent.parent / "blobs").resolve()):
        return lexical
    raise CheckpointSafetyError(f"{relative}: path escapes the checkpoint folder {root}")


def verify_folder(root: Path, recorded: dict[str, str]) -> None:
    """Refuse pickles and unlisted files, and check every recorded file's hash.

    Every file in ``root`` must be one of ``recorded`` (relative path -> SHA-256), else it is
    refused: an unlisted file would be loaded or published without a hash check (e.g. a
    ``model.safetensors`` dropped into a stage folder, which that stage would then load).
    Exempt are the top-level names in :data:`UNLISTED_ALLOWED` and top-level hidden entries
    (``.gitattributes``, ``.git/``, huggingface_hub's ``.cache/``), which tools leave behind
    and nothing here reads.
    """
    listed = {Path(relative).as_posix() for relative in recorded}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise CheckpointSafetyError(f"{relative}: pickled files are refused; use safetensors")
        top = relative.parts[0]
        if path.is_dir() or top in UNLISTED_ALLOWED or top.startswith(".") or relative.as_posix() in listed:
            continue
        raise CheckpointSafetyError(f"{relative}: not listed in {PIPELINE_CONFIG}, refused: an unlisted file has "
                                    "no hash to check")
    for relative, expected in recorded.items():
        path = inside(root, relative)
        if not path.is_file():
            raise CheckpointSafetyError(f"{relative}: listed in {PIPELINE_CONFIG} but missing")
        if sha256(path) != expected:
            raise CheckpointSafetyError(f"{relative}: SHA-256 does not match {PIPELINE_CONFIG} (corrupt or altered)")


# --------------------------------------------------------------------------- foundation-model weights


def is_commit(revision: str | None) -> bool:
    """Whether a Hub revision is pinned: a 40-hex commit names the same files forever, while a
    branch or tag (or None, the ``main`` branch) can be moved by the repo's owners."""
    return revision is not None and COMMIT_HASH.fullmatch(revision) is not None


@dataclass(frozen=True)
class HubFile:
    """One published weight file of a foundation model, at a revision.

    ``revision`` is a 40-hex commit (pinned: the same bytes forever), a branch or tag, or None
    (the repo's ``main`` branch, which its owners may move).
    """

    repo: str
    filename: str
    revision: str | None = None

    @property
    def pinned(self) -> bool:
        return is_commit(self.revision)

    def __str__(self) -> str:
        return f"{self.repo}/{self.filename}@{self.revision or 'main'}"

    def describe(self) -> dict:
        """What ``pipeline_config.json`` records under ``base_models``."""
        return {"repo": self.repo, "filename": self.filename, "revision": self.revision or "main",
                "pinned": self.pinned}


def hub_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the file could not be fetched", across HTTP client libraries."""
    from huggingface_hub import errors

    found: list[type[BaseException]] = [errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled,
                                        errors.HfHubHTTPError, ConnectionError, TimeoutError]
    try:
        import httpx

        found.append(httpx.TransportError)
    except ImportError:
        pass
    try:
        import requests

        found.append(requests.exceptions.ConnectionError)
    except ImportError:
        pass
    return tuple(found)


USE_MINI = "use the embedded 'mini' preset or pre-download them into the Hugging Face cache on a connected machine"
_warned_unpinned: set[HubFile] = set()


def fetch(files: list[HubFile], what: str, *, warn_unpinned: bool = True, advice: str = USE_MINI) -> list[Path]:
    """Download each file at its revision, or find it in the Hugging Face cache (offline).

    Fetching happens before any model is built: a missing file fails in a second, not after
    building a 300 M-parameter network. A file that is not pinned is logged once per process.

    Raises:
        RuntimeError: One line naming ``what``, every file that is neither cached nor reachable,
            and ``advice``.
    """
    from huggingface_hub import hf_hub_download

    paths, missing = [], []
    for file in files:
        try:
            paths.append(Path(hf_hub_download(file.repo, file.filename, revision=file.revision)))
        except hub_errors():
            missing.append(str(file))
    if missing:
        raise RuntimeError(
            f"{what} weights are not in the local Hugging Face cache and the Hub is unreachable or refused "
            f"(HF_HUB_OFFLINE=1 or no network): {', '.join(missing)}; {advice}."
        )
    for file in files:
        if warn_unpinned and not file.pinned and file not in _warned_unpinned:
            _warned_unpinned.add(file)
            logger.warning("%s: %s is not pinned to a commit; its owners can change it "
                           "(python -m training.init_presets --pin records the commit)", what, file)
    return paths


def commit_of(path: Path, file: HubFile) -> str:
    """The commit a cached Hub file belongs to: its ``snapshots/<commit>/`` folder."""
    snapshot = Path(path).parents[len(Path(file.filename).parts) - 1]
    if snapshot.parent.name != "snapshots" or not COMMIT_HASH.fullmatch(snapshot.name):
        raise RuntimeError(f"{file}: {path} is not inside a Hugging Face cache snapshot; cannot tell its commit")
    return snapshot.name


def load_torch_weights(path: Path) -> dict:
    """The tensors of a published ``.pt`` state dict, unpickled only with ``weights_only=True``.

    Non-tensor entries (metadata some checkpoints carry) are dropped; whether the tensors fit
    the model is ``load_exact``'s check.
    """
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise CheckpointSafetyError(f"{path.name}: not a state dict of tensors")
    return tensors


def load_exact(module, state: dict, source: str) -> None:
    """Load ``state`` into ``module``: every learned weight of the module must come from it.

    A missing parameter or a wrong shape is an error, never a silently random-initialised layer.
    Tied parameters (one tensor under two names) need one of their names. Buffers the file
    lacks keep the values the architecture computes: in TerraMind and Prithvi they are fixed
    sin-cos position tables and the zero bias of bias-free LayerNorms, not learned. Extra
    entries are ignored (a published encoder-decoder file also holds the decoder an encoder
    does not use).
    """
    own = module.state_dict()
    names_of: dict[int, list[str]] = {}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(parameter), []).append(name)
    missing = [names[0] for names in names_of.values() if not any(name in state for name in names)]
    wrong = [key for key in own if key in state and state[key].shape != own[key].shape]
    if missing or wrong:
        raise CheckpointSafetyError(
            f"{source}: {len(missing)} weights missing (e.g. {missing[:3]}) and {len(wrong)} with the "
            f"wrong shape (e.g. {wrong[:3]}) for {type(module).__name__}"
        )
    module.load_state_dict({key: state[key] for key in own if key in state}, strict=False)
