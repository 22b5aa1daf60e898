#!/usr/bin/env python3
"""PyTorch's CPU training step for `tessera bench train` (the reference column): every model
Tessera ships — torchvision's resnet18/34/50 and alexnet, the -cifar ResNets with a 3×3
stride-1 stem and no max-pool, and simple-cnn, resnet20-cifar and alexnet-cifar written out as
Tessera builds them (same parameter counts), and airbench94 — SGD momentum 0.9 weight decay 5e-4, random inputs; the median over
steps after warm-up, split into forward + loss, backward and optimizer, and the peak resident
memory above the process's size right after importing torch. Prints one JSON object.

    python3 scripts/bench_torch.py --model resnet50 --num-classes 10 --input 32 --batch 32 --threads 2
"""
import argparse
import json
import statistics
import sys
import time


def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def small_resnet(blocks, widths, classes):
    """A CIFAR ResNet of basic blocks (ResNet-20: 3×3 blocks of 16, 32, 64 channels), as
    Tessera builds it: 3×3 stem without max-pool, 1×1 projection shortcuts where the shape
    changes (torchvision's BasicBlock)."""
    import torch
    from torchvision.models.resnet import BasicBlock

    layers, inputs = [], widths[0]
    for stage, (count, width) in enumerate(zip(blocks, widths)):
        seq = []
        for b in range(count):
            stride = 2 if stage > 0 and b == 0 else 1
            down = None
            if stride != 1 or inputs != width:
                down = torch.nn.Sequential(torch.nn.Conv2d(inputs, width, 1, stride, bias=False), torch.nn.BatchNorm2d(width))
            seq.append(BasicBlock(inputs, width, stride, down))
            inputs = width
        layers.append(torch.nn.Sequential(*seq))
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), torch.nn.BatchNorm2d(widths[0]), torch.nn.ReLU(inplace=True),
        *layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(inputs, classes))


def build(name, classes):
    import torch
    import torchvision

    nn = torch.nn
    if name == "simple-cnn":
        return nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(),
                             nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(64 * 8 * 8, classes))
    if name == "resnet20-cifar":
        return small_resnet([3, 3, 3], [16, 32, 64], classes)
    if name == "alexnet-cifar":
        # Tessera's CIFAR AlexNet: 3×3 convolutions, 2×2 pools, a 4×4 average pool, 1024-wide FC.
        return nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 192, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(192, 384, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2), nn.AdaptiveAvgPool2d((4, 4)), nn.Flatten(),
            nn.Dropout(0.5), nn.Linear(256 * 16, 1024), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(1024, 1024),
            nn.ReLU(inplace=True), nn.Linear(1024, classes))
    if name == "airbench94":
        # Tessera's airbench94 (models/src/airbench.rs): whitening conv, three GELU conv groups.
        def group(cin, w):
            norm = lambda: nn.BatchNorm2d(w, eps=1e-12, momentum=0.4)
            return [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.MaxPool2d(2), norm(), nn.GELU(),
                    nn.Conv2d(w, w, 3, 1, 1, bias=False), norm(), nn.GELU()]
        return nn.Sequential(nn.Conv2d(3, 24, 2), nn.GELU(), *group(24, 64), *group(64, 256), *group(256, 256),
                             nn.MaxPool2d(3), nn.Flatten(), nn.Linear(256, classes, bias=False))
    base = name.removesuffix("-cifar")
    if base not in ("resnet18", "resnet34", "resnet50", "alexnet") or name == "alexnet-cifar":
        raise SystemExit(f"no PyTorch reference for model `{name}`")
    model = getattr(torchvision.models, base)(num_classes=classes)
    if name.endswith("-cifar"):
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    return model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args()
    import torch
    import torchvision  # noqa: F401  (part of the import baseline)

    torch.set_num_threads(a.threads)
    baseline = rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to now
    torch.manual_seed(0)
    model = build(a.model, a.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(a.batch, 3, a.input, a.input) * 2 - 1
    y = torch.arange(a.batch) % a.num_classes
    fwd, bwd, upd = [], [], []
    for step in range(a.warmup + max(a.steps, 1)):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if step >= a.warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            upd.append(t3 - t2)
    ms = lambda v: statistics.median(v) * 1e3
    step_ms = ms([f + b + u for f, b, u in zip(fwd, bwd, upd)])
    print(json.dumps({
        "torch": torch.__version__, "threads": a.threads,
        "forward_ms": ms(fwd), "backward_ms": ms(bwd), "optimizer_ms": ms(upd), "step_ms": step_ms,
        "images_per_sec": a.batch / (step_ms / 1e3),
        "peak_mib": (rss_kib("VmHWM") - baseline) / 1024,
    }))


if __name__ == "__main__":
    sys.exit(main())
