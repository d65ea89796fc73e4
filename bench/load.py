"""Concurrent load on the app: N simultaneous ``/translate`` requests against ``python app.py`` on loopback.

The app runs one translation at a time in a bounded queue, so a burst tests that queueing
holds: every request completes (or is refused cleanly), latency grows with queue position,
and the server's memory comes back to its level after the first request (model loaded) once
the burst is over. Each request sends a different bundled test tile and its reference, with
the argument list of ``/translate`` as the app tests call it.

    python -m bench.load [--requests 20] [--timeout 600]
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from bench.common import AppServer, machine_info, proc_memory_mb, test_pairs

# "Near baseline": after the burst the server's RSS may exceed its post-warm-up level by at most this fraction.
RSS_RETURN_ALLOWED = 0.10


def translate_arguments(pair) -> tuple:
    """``/translate`` inputs for one bundled pair, in the order of ``app.ui.run_translate``."""
    from gradio_client import handle_file

    from app.ui import SLIDER_CHOICES

    return (handle_file(str(pair.s1_path)), handle_file(str(pair.s2_path)), "mini", 0, pair.biome, 0,
            ["1", "2", "3"], next(iter(SLIDER_CHOICES)), "auto", None)


def one_request(client, pair, deadline: float) -> tuple[bool, float, str]:
    """(completed, seconds, error) of one request, given up at ``deadline`` (perf_counter)."""
    start = time.perf_counter()
    job = client.submit(*translate_arguments(pair), api_name="/translate")
    try:
        job.result(timeout=max(0.0, deadline - time.perf_counter()))
        return True, time.perf_counter() - start, ""
    except Exception as error:  # noqa: BLE001  (every failure is counted and reported, by kind)
        job.cancel()
        message = (str(error).strip().splitlines() or [""])[0][:120]
        return False, time.perf_counter() - start, f"{type(error).__name__}: {message}"


class MemorySampler(threading.Thread):
    """Polls a process's VmRSS every ``interval`` s and keeps the maximum seen."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak_mb = pid, interval, 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak_mb = max(self.peak_mb, proc_memory_mb(self.pid)["VmRSS"])
            self.stopped.wait(self.interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20, help="simultaneous requests")
    parser.add_argument("--timeout", type=float, default=600.0, help="the whole burst is given up after this")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait after the burst before 'after'")
    args = parser.parse_args()
    from gradio_client import Client

    print(machine_info())
    pairs = test_pairs()
    with AppServer() as server:
        ready_s = server.wait_ready(120)
        pid = server.process.pid
        idle = proc_memory_mb(pid)["VmRSS"]
        warm_client = Client(server.url, verbose=False, download_files=False)
        ok, warm_s, error = one_request(warm_client, pairs[0], time.perf_counter() + 300)
        if not ok:
            raise SystemExit(f"warm-up request failed: {error}\n{server.log_tail()}")
        baseline = proc_memory_mb(pid)["VmRSS"]
        print(f"server up in {ready_s:.1f} s; RSS idle {idle:.0f} MB; warm-up request (loads the preset) "
              f"{warm_s:.2f} s; RSS after it {baseline:.0f} MB (the baseline)")

        clients = [Client(server.url, verbose=False, download_files=False) for _ in range(args.requests)]
        results: list[tuple[bool, float, str]] = [(False, 0.0, "not run")] * args.requests
        start_line = threading.Barrier(args.requests + 1)
        deadline = time.perf_counter() + args.timeout

        def worker(index: int) -> None:
            start_line.wait()
            results[index] = one_request(clients[index], pairs[index % len(pairs)], deadline)

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.requests)]
        for thread in threads:
            thread.start()
        sampler = MemorySampler(pid)
        sampler.start()
        start_line.wait()
        burst_start = time.perf_counter()
        for thread in threads:
            thread.join(max(0.0, deadline - time.perf_counter()) + 30)
        burst_s = time.perf_counter() - burst_start
        time.sleep(args.settle)
        sampler.stopped.set()
        sampler.join()
        after = proc_memory_mb(pid)
        alive = server.process.poll() is None

    done = [seconds for ok, seconds, _ in results if ok]
    errors: dict[str, int] = {}
    for ok, _, error in results:
        if not ok:
            errors[error] = errors.get(error, 0) + 1
    print(f"\n{args.requests} concurrent /translate requests (SAR + reference, preset mini), burst took {burst_s:.1f} s")
    print(f"completed {len(done)}, failed {args.requests - len(done)}; server still running: {alive}")
    for error, count in errors.items():
        print(f"  {count} x {error}")
    if done:
        p50, p95 = np.percentile(done, [50, 95])
        print(f"latency of completed requests: p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(done):.2f} s")
    print(f"server RSS: before {baseline:.0f} MB (after warm-up; idle {idle:.0f} MB), peak during {sampler.peak_mb:.0f} MB "
          f"(polled every 50 ms; VmHWM {after['VmHWM']:.0f} MB), after {after['VmRSS']:.0f} MB ({args.settle:g} s later)")
    returned = after["VmRSS"] <= baseline * (1 + RSS_RETURN_ALLOWED)
    print(f"target: all {args.requests} complete: {'met' if len(done) == args.requests else 'MISSED'}; "
          f"memory returns near baseline (<= +{RSS_RETURN_ALLOWED:.0%}): {'met' if returned else 'MISSED'} "
          f"({after['VmRSS'] / baseline - 1:+.1%})")


if __name__ == "__main__":
    main()
