"""Helpers shared by the benchmarks: machine description, real bundled tiles, and a live app server."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TILE = 128


def machine_info() -> str:
    """One line saying what the figures were measured on: they mean little without it."""
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    usable = len(os.sched_getaffinity(0))
    return (f"machine: {cpu}; {os.cpu_count()} CPUs ({usable} usable); torch {torch.__version__} "
            f"with {torch.get_num_threads()} threads; python {platform.python_version()}")


def test_pairs():
    """The bundled test-split pairs with a reference, georeferenced (BENv2) ones first, as the app's examples."""
    from gac_pipeline.data import DEFAULT_DATA_DIR, list_pairs

    pairs = [p for p in list_pairs(DEFAULT_DATA_DIR, "test") if p.s2_path is not None]
    return sorted(pairs, key=lambda p: (p.source != "BENv2", p.name))


def real_tile(size: int = TILE) -> tuple[np.ndarray, object]:
    """A real bundled SAR tile (VV, VH dB) reflect-padded or cropped to ``size`` px, and its pair."""
    from gac_pipeline.io import read_s1

    pair = test_pairs()[0]
    data = read_s1(pair.s1_path).data[:, :size, :size]
    pad_h, pad_w = size - data.shape[1], size - data.shape[2]
    data = np.pad(data, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)), mode="reflect")
    return np.ascontiguousarray(data, dtype=np.float32), pair


def summary(values: list[float]) -> str:
    """Median with the spread, so a noisy machine shows as noise rather than as a result."""
    return f"{statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def verdict(measured: float, target: float, unit: str, *, below: bool = True) -> str:
    """``met`` or ``missed by`` a stated amount, for a target that is an upper (or lower) bound."""
    ok = measured < target if below else measured >= target
    if ok:
        return f"met ({measured:.3g} {unit} vs {'<' if below else '>='} {target:g} {unit})"
    gap = measured - target if below else target - measured
    return f"MISSED by {gap:.3g} {unit} ({measured:.3g} {unit}, {measured / target:.2f}x the target)"


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak since start) of a process, in MB, from /proc (no psutil needed)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # kB -> MB
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """``python app.py`` as a subprocess on a free loopback port, as Hugging Face Spaces starts it.

    Analytics are off so the figures do not depend on reaching gradio's telemetry server;
    the Hub is offline, so nothing is downloaded. The log goes to a temp file (shown on failure).
    """

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = tempfile.NamedTemporaryFile(prefix="gac_bench_app_", suffix=".log", delete=False)  # noqa: SIM115
        env = os.environ | {"GRADIO_SERVER_PORT": str(self.port), "GRADIO_SERVER_NAME": "127.0.0.1",
                            "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        self.started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> float:
        """Seconds from launch until ``/`` answers HTTP 200; raises with the log's tail if it never does."""
        while time.perf_counter() - self.started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return time.perf_counter() - self.started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"app did not serve {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
