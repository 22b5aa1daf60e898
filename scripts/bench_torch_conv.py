#!/usr/bin/env python3
"""PyTorch's conv2d on the CPU at the shapes `tessera bench kernels` times (its reference
column): forward (`torch.nn.functional.conv2d`), backward data (`torch.nn.grad.conv2d_input`)
and backward weight (`torch.nn.grad.conv2d_weight`), each the median of runs filling a time
budget (at least 3) after one warm-up run. Reads the cases as a JSON list from the command
line, each {"pass": "forward" | "data" | "weight", "x": [N, C, H, W], "w": [O, C, kh, kw],
"stride": s, "padding": p}; prints one JSON object with the version and each case's ms.

    python3 scripts/bench_torch_conv.py --threads 2 --seconds 1 \\
        '[{"pass": "forward", "x": [8, 64, 56, 56], "w": [64, 64, 3, 3], "stride": 1, "padding": 1}]'
"""
import argparse
import json
import statistics
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cases")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=1.0)
    a = p.parse_args()
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    times = []
    for case in json.loads(a.cases):
        x = torch.rand(case["x"]) * 2 - 1
        w = torch.rand(case["w"]) * 2 - 1
        stride, padding = case["stride"], case["padding"]
        y = F.conv2d(x, w, stride=stride, padding=padding)
        g = torch.rand(y.shape) * 2 - 1
        run = {
            "forward": lambda: F.conv2d(x, w, stride=stride, padding=padding),
            "data": lambda: torch.nn.grad.conv2d_input(x.shape, w, g, stride=stride, padding=padding),
            "weight": lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, stride=stride, padding=padding),
        }[case["pass"]]
        with torch.no_grad():
            run()
            samples, start = [], time.perf_counter()
            while len(samples) < 3 or time.perf_counter() - start < a.seconds:
                t0 = time.perf_counter()
                run()
                samples.append(time.perf_counter() - t0)
        times.append(statistics.median(samples) * 1e3)
    print(json.dumps({"torch": torch.__version__, "threads": a.threads, "ms": times}))


if __name__ == "__main__":
    sys.exit(main())
