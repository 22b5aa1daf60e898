#!/usr/bin/env python3
"""Writes PyTorch golden values for Tessera's op tests to tests/fixtures/*.safetensors.

Each case stores its inputs, a random upstream gradient `r` (the loss is sum(y * r)), the
outputs and every input gradient, under names `<case>.<tensor>`. The case list with each op's
options is stored as JSON in the file's metadata (key "cases"), so the Rust tests read the
options from the file rather than repeating them.

    python3 -m venv "$VENV" && "$VENV"/bin/pip install torch safetensors numpy   # VENV: any folder
    "$VENV"/bin/python scripts/make_golden.py        # from the repository root
    "$VENV"/bin/python scripts/make_golden.py optim  # one set: ops, sgd, optim, cnn, amp
"""
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
torch.use_deterministic_algorithms(True)
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def rand(*shape):
    return (torch.rand(*shape, dtype=torch.float64) * 2 - 1).float()


class Writer:
    def __init__(self):
        self.tensors, self.cases = {}, []

    def case(self, name, op, inputs, fn, **options):
        """Runs fn(*inputs) in float64 from the float32 inputs, stores f32 results."""
        leaves = {k: v.double().requires_grad_(True) for k, v in inputs.items()}
        y = fn(**leaves)
        r = rand(*y.shape).double() if y.dim() > 0 else torch.tensor(1.0, dtype=torch.float64)
        (y * r).sum().backward()
        for k, v in inputs.items():
            self.tensors[f"{name}.{k}"] = v.contiguous()
            self.tensors[f"{name}.d{k}"] = leaves[k].grad.float().contiguous()
        self.tensors[f"{name}.r"] = r.float().contiguous()
        self.tensors[f"{name}.y"] = y.detach().float().contiguous()
        self.cases.append(dict(name=name, op=op, inputs=list(inputs), **options))

    def save(self, file):
        save_file(self.tensors, os.path.join(OUT, file), metadata={"cases": json.dumps(self.cases)})


def ops_fixtures():
    w = Writer()
    w.case("linear", "linear", dict(x=rand(4, 6), w=rand(3, 6), b=rand(3)), lambda x, w, b: F.linear(x, w, b))
    convs = [  # (x shape, w shape, stride, padding, dilation)
        ((2, 3, 35, 35), (4, 3, 11, 11), 4, 2, 1),  # AlexNet conv1
        ((2, 4, 9, 9), (5, 4, 5, 5), 1, 2, 1),  # AlexNet 5x5 pad 2
        ((1, 3, 20, 18), (4, 3, 7, 7), 2, 3, 1),  # ResNet stem
        ((3, 5, 8, 8), (6, 5, 3, 3), 1, 1, 1),
        ((2, 6, 9, 9), (8, 6, 1, 1), 2, 0, 1),  # ResNet downsample
        ((1, 2, 11, 13), (3, 2, 3, 3), 1, 2, 2),
    ]
    for i, (xs, ws, s, p, d) in enumerate(convs):
        w.case(f"conv{i}", "conv2d", dict(x=rand(*xs), w=rand(*ws), b=rand(ws[0])),
               lambda x, w, b, s=s, p=p, d=d: F.conv2d(x, w, b, stride=s, padding=p, dilation=d),
               stride=s, padding=p, dilation=d)
    w.case("maxpool0", "max_pool2d", dict(x=rand(2, 3, 11, 10)), lambda x: F.max_pool2d(x, 3, 2, 1), kernel=3, stride=2, padding=1)
    w.case("maxpool1", "max_pool2d", dict(x=rand(1, 4, 13, 13)), lambda x: F.max_pool2d(x, 3, 2, 0), kernel=3, stride=2, padding=0)
    w.case("avgpool0", "avg_pool2d", dict(x=rand(2, 3, 9, 7)), lambda x: F.avg_pool2d(x, 3, 2, 1), kernel=3, stride=2, padding=1)
    w.case("adaptive0", "adaptive_avg_pool2d", dict(x=rand(2, 5, 7, 7)), lambda x: F.adaptive_avg_pool2d(x, 1), out=[1, 1])
    w.case("adaptive1", "adaptive_avg_pool2d", dict(x=rand(1, 3, 13, 13)), lambda x: F.adaptive_avg_pool2d(x, 6), out=[6, 6])
    w.case("relu", "relu", dict(x=rand(3, 7)), lambda x: F.relu(x))
    w.case("softmax", "softmax", dict(x=rand(5, 9) * 10), lambda x: F.softmax(x, -1))
    w.case("log_softmax", "log_softmax", dict(x=rand(5, 9) * 10), lambda x: F.log_softmax(x, -1))
    labels = [3, 0, 8, 1, 5, 5]
    w.case("cross_entropy", "cross_entropy", dict(x=rand(6, 9) * 5), lambda x: F.cross_entropy(x, torch.tensor(labels)), labels=labels)
    w.case("sum", "sum", dict(x=rand(2, 3, 4)), lambda x: x.sum(dim=(0, 2)), axes=[0, 2], keepdim=False)
    w.case("mean", "mean", dict(x=rand(2, 3, 4)), lambda x: x.mean(dim=1, keepdim=True), axes=[1], keepdim=True)
    for training in (True, False):
        name = "bn_train" if training else "bn_eval"
        rm, rv = rand(4) * 0.1, rand(4).abs() + 0.5
        state = {}

        def bn(x, weight, bias, rm=rm, rv=rv, training=training, state=state):
            m, v = rm.double().clone(), rv.double().clone()
            y = F.batch_norm(x, m, v, weight, bias, training=training, momentum=0.1, eps=1e-5)
            state["rm"], state["rv"] = m, v
            return y

        x = rand(3, 4, 5, 5) * 2 + 0.5
        w.case(name, "batch_norm2d", dict(x=x, weight=rand(4), bias=rand(4)), bn, training=training)
        w.tensors[f"{name}.running_mean_in"], w.tensors[f"{name}.running_var_in"] = rm, rv
        w.tensors[f"{name}.running_mean_out"] = state["rm"].float()
        w.tensors[f"{name}.running_var_out"] = state["rv"].float()
    # Appended last, so the cases above keep their inputs.
    w.case("gelu", "gelu", dict(x=rand(4, 9) * 4), lambda x: F.gelu(x))
    w.case("cross_entropy_smoothed", "cross_entropy", dict(x=rand(6, 9) * 5),
           lambda x: F.cross_entropy(x, torch.tensor(labels), label_smoothing=0.2), labels=labels, smoothing=0.2)
    # airbench's batch norm: the scale frozen at 1 (not an input: no gradient), momentum 0.6,
    # eps 1e-12.
    rm, rv, state = rand(4) * 0.1, rand(4).abs() + 0.5, {}

    def bn_frozen(x, bias, rm=rm, rv=rv, state=state):
        m, v = rm.double().clone(), rv.double().clone()
        y = F.batch_norm(x, m, v, torch.ones(4, dtype=torch.float64), bias, training=True, momentum=0.6, eps=1e-12)
        state["rm"], state["rv"] = m, v
        return y

    w.case("bn_frozen", "batch_norm2d", dict(x=rand(3, 4, 5, 5) * 2 + 0.5, bias=rand(4)), bn_frozen,
           training=True, momentum=0.6, eps=1e-12, frozen_weight=True)
    w.tensors["bn_frozen.running_mean_in"], w.tensors["bn_frozen.running_var_in"] = rm, rv
    w.tensors["bn_frozen.running_mean_out"] = state["rm"].float()
    w.tensors["bn_frozen.running_var_out"] = state["rv"].float()
    w.save("ops_golden.safetensors")


def sgd_fixtures():
    """Parameter values after each of 10 torch.optim.SGD steps with fixed gradients."""
    tensors, cases = {}, []
    configs = [
        dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=1e-4, nesterov=False),
        dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=5e-4, nesterov=True),
        dict(lr=0.1, momentum=0.5, dampening=0.1, weight_decay=0.0, nesterov=False),
    ]
    for i, cfg in enumerate(configs):
        p0 = rand(13)
        p = torch.nn.Parameter(p0.clone())
        opt = torch.optim.SGD([p], **cfg)
        tensors[f"sgd{i}.p0"] = p0
        for step in range(10):
            g = rand(13)
            p.grad = g.clone()
            opt.step()
            tensors[f"sgd{i}.g{step}"] = g
            tensors[f"sgd{i}.p{step + 1}"] = p.detach().clone()
        cases.append(dict(name=f"sgd{i}", **cfg))
    save_file(tensors, os.path.join(OUT, "sgd_golden.safetensors"), metadata={"cases": json.dumps(cases)})


def optim_fixtures():
    """Parameter values after each of 10 steps of torch.optim.AdamW and SGD with fixed
    gradients, some under a linear warm-up times a cosine schedule: LambdaLR with
    min(1, (s + 1)/W) · ½(1 + cos(π s/T)), whose warm-up factor is LinearLR's (checked below)."""
    import math
    tensors, cases = {}, []
    configs = [
        dict(kind="adamw", lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, warmup=0, total=0),
        dict(kind="adamw", lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, warmup=4, total=10),
        dict(kind="adamw", lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup=0, total=10),
        dict(kind="sgd", lr=0.1, momentum=0.9, dampening=0.0, weight_decay=5e-4, nesterov=False, warmup=3, total=10),
        # Lookahead over Nesterov SGD (airbench's pairing), written out: every k steps the slow
        # weights move α of the way to the fast ones, and the fast ones restart from them.
        dict(kind="sgd", lr=0.2, momentum=0.9, dampening=0.0, weight_decay=5e-4, nesterov=True, warmup=0, total=0,
             lookahead_every=3, lookahead_alpha=0.4),
    ]
    for i, cfg in enumerate(configs):
        p0 = rand(29)
        p = torch.nn.Parameter(p0.clone())
        if cfg["kind"] == "adamw":
            opt = torch.optim.AdamW([p], lr=cfg["lr"], betas=cfg["betas"], eps=cfg["eps"], weight_decay=cfg["weight_decay"])
        else:
            opt = torch.optim.SGD([p], lr=cfg["lr"], momentum=cfg["momentum"], dampening=cfg["dampening"],
                                  weight_decay=cfg["weight_decay"], nesterov=cfg["nesterov"])
        w, t = cfg["warmup"], cfg["total"]
        warm = lambda s: min(1.0, (s + 1) / w) if w else 1.0
        cos = lambda s: 0.5 * (1 + math.cos(math.pi * s / t)) if t else 1.0
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warm(s) * cos(s))
        if w:
            probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
            linear = torch.optim.lr_scheduler.LinearLR(probe, start_factor=1 / w, total_iters=w - 1)
            for s in range(w + 2):
                assert abs(probe.param_groups[0]["lr"] - warm(s)) < 1e-12, (s, probe.param_groups[0]["lr"], warm(s))
                probe.step()
                linear.step()
        tensors[f"optim{i}.p0"] = p0
        slow = p0.clone()
        for step in range(10):
            g = rand(29)
            p.grad = g.clone()
            opt.step()
            sched.step()
            k = cfg.get("lookahead_every", 0)
            if k and (step + 1) % k == 0:
                with torch.no_grad():
                    slow += cfg["lookahead_alpha"] * (p - slow)
                    p.copy_(slow)
            tensors[f"optim{i}.g{step}"] = g
            tensors[f"optim{i}.p{step + 1}"] = p.detach().clone()
        cases.append(dict(name=f"optim{i}", **cfg))
    save_file(tensors, os.path.join(OUT, "optim_golden.safetensors"), metadata={"cases": json.dumps(cases)})


def cnn_fixtures():
    """The simple CNN of the Tessera tests: logits, loss and every parameter gradient."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64, 4),
    ).double()
    x = rand(6, 3, 8, 8)
    labels = [0, 3, 1, 2, 2, 1]
    logits = model(x.double())
    loss = F.cross_entropy(logits, torch.tensor(labels))
    loss.backward()
    tensors = {"x": x, "logits": logits.detach().float(), "loss": loss.detach().float().reshape([])}
    for name, p in model.named_parameters():
        tensors[name] = p.detach().float().contiguous()
        tensors[f"grad.{name}"] = p.grad.float().contiguous()
    save_file(tensors, os.path.join(OUT, "cnn_golden.safetensors"), metadata={"labels": json.dumps(labels)})


def amp_fixtures():
    """One mixed-precision step of a conv-BN-ReLU CNN as torch.autocast (float16) computes it,
    with the loss scaled by 2^10 and the gradients unscaled (GradScaler's arithmetic), beside
    the float32 step: the test holds Tessera's mixed step to PyTorch's within PyTorch's own
    f16 deviation from f32."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 8, 3, padding=1, bias=False), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 5),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(rand(*p.shape) * (0.5 if p.dim() > 1 else 1.0))
    x = rand(8, 3, 12, 12)
    labels = [i % 5 for i in range(8)]
    scale = 1024.0
    tensors = {"x": x}
    for name, p in model.named_parameters():
        tensors[name] = p.detach().clone().contiguous()
    for kind in ["f32", "amp"]:
        model.zero_grad()
        model.train()
        with torch.autocast("cpu", dtype=torch.float16, enabled=kind == "amp"):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), torch.tensor(labels))
        (loss * scale).backward()
        tensors[f"{kind}.loss"] = loss.detach().float().reshape([])
        for name, p in model.named_parameters():
            tensors[f"{kind}.grad.{name}"] = (p.grad.float() / scale).contiguous()
    save_file(tensors, os.path.join(OUT, "amp_golden.safetensors"), metadata={"labels": json.dumps(labels), "scale": str(scale), "torch": torch.__version__})


def whitening_fixtures():
    """The patch-whitening weight of nn::patch_whitening from numpy's eigendecomposition
    (numpy.linalg.eigh) of the uncentred covariance of every 2×2 patch of synthetic images:
    eigenvectors by eigenvalue from largest, each scaled by 1/sqrt(λ + eps) with its
    largest-magnitude entry made positive, then the same rows negated."""
    import numpy as np
    x = rand(16, 3, 7, 6)
    kh, kw, eps = 2, 2, 5e-4
    xs = x.double().numpy()
    n, c, h, w = xs.shape
    patches = np.stack([xs[:, :, i:i + h - kh + 1, j:j + w - kw + 1] for i in range(kh) for j in range(kw)], axis=2)
    # [n, c, kh·kw, ho, wo] → one row per patch, columns in the weight's (c, i, j) order
    patches = patches.transpose(0, 3, 4, 1, 2).reshape(-1, c * kh * kw)
    cov = patches.T @ patches / patches.shape[0]
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    rows = []
    for k in order:
        v = vectors[:, k]
        v = v * np.sign(v[np.argmax(np.abs(v))]) / np.sqrt(max(values[k], 0.0) + eps)
        rows.append(v)
    weight = np.concatenate([np.stack(rows), -np.stack(rows)]).reshape(2 * c * kh * kw, c, kh, kw)
    save_file({"x": x.contiguous(), "weight": torch.from_numpy(weight).float().contiguous(),
               "eigenvalues": torch.from_numpy(values[order].copy()).float()},
              os.path.join(OUT, "whitening_golden.safetensors"), metadata={"eps": str(eps), "kernel": json.dumps([kh, kw])})


if __name__ == "__main__":
    import sys
    os.makedirs(OUT, exist_ok=True)
    # Optional arguments name the fixture sets to write (default: all).
    sets = {"ops": ops_fixtures, "sgd": sgd_fixtures, "optim": optim_fixtures, "cnn": cnn_fixtures, "amp": amp_fixtures,
            "whitening": whitening_fixtures}
    for name in sys.argv[1:] or list(sets):
        sets[name]()
    print("wrote", sorted(os.listdir(OUT)))
