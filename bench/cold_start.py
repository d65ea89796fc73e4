"""App cold start: ``python app.py`` launched to the first HTTP 200 on ``/``, the time a Space visitor waits.

Each repeat is a fresh process on a free loopback port. Repeats share the OS file cache, so
they measure a warm disk; the very first start after boot can be slower.

    python -m bench.cold_start [--repeats 3] [--timeout 120]
"""

from __future__ import annotations

import argparse
import statistics

from bench.common import AppServer, machine_info, verdict

TARGET_S = 20.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on one start after this many seconds")
    args = parser.parse_args()

    print(machine_info())
    times = []
    for repeat in range(1, args.repeats + 1):
        with AppServer() as server:
            seconds = server.wait_ready(args.timeout)
        times.append(seconds)
        print(f"start {repeat}: first HTTP 200 on / after {seconds:.2f} s (port {server.port})", flush=True)
    median = statistics.median(times)
    print(f"\ncold start, median of {len(times)}: {median:.2f} s (min {min(times):.2f}, max {max(times):.2f})")
    print(f"target: cold start < {TARGET_S:g} s: {verdict(median, TARGET_S, 's')}")


if __name__ == "__main__":
    main()
