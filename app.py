"""Entry point of the GAC Gradio app: Hugging Face Spaces runs ``python app.py``.

``demo`` is built at import time so that Spaces and ``gradio app.py`` (reload mode) find it.
Building it reads local files only (bundled examples, ``eval/results/``): no model is loaded
and nothing is downloaded until a request needs it (on ZeroGPU the default preset is loaded at
start, see below). The UI lives in the ``app`` package next to this file (``app/ui.py``,
``app/handlers.py``, ``app/evaluation.py``).
"""

import os

from app import handlers
from app.ui import build_demo

# The app accepts scenes up to 1024x1024 px: a float32 12-band reference of that size is ~50 MB.
MAX_FILE_SIZE = "64mb"

# One translation at a time: the models use every CPU core; others wait in a bounded queue
# (32: a burst of 20 users all get served, bench/load.py; a 128-px tile takes ~0.3 s).
demo = build_demo().queue(default_concurrency_limit=1, max_size=32)

# On Hugging Face ZeroGPU (SPACES_ZERO_GPU set) every spaces.GPU call runs in a worker process
# started (forked) from this one, and CUDA exists only there: load the default preset here, on
# CPU, so that every call starts with it (handlers.translate moves it to the GPU inside the
# call). Elsewhere presets load on first use. https://huggingface.co/docs/hub/spaces-zerogpu
if os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true"):
    handlers.load_pipeline(handlers.preset_choices()[0])

if __name__ == "__main__":
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=MAX_FILE_SIZE,
    )
