#!/usr/bin/env python3
"""The airbench94 recipe in PyTorch on the CPU: the reference `tessera bench time-to-accuracy`
times beside Tessera's, on the same cores, back to back.

Written for Tessera from the method's description (Jordan, "94% on CIFAR-10 in 3.29 Seconds
on a Single GPU", arXiv 2404.00498) with the same choices as `tessera train --recipe
airbench94` (scheduler/src/recipe.rs): the network, whitening from 5000 training images spread
evenly over the set, Nesterov SGD with decoupled lr/wd, 64x batch-norm bias rate, triangular
schedule, label smoothing 0.2, the whitening bias frozen after 3 epochs, Lookahead from epoch 4,
translate-2 reflect + alternating flips, 9.9 epochs, mirror+translate TTA.

Reads CIFAR-10 in the image-folder layout (train/<class>/*.jpg, test/<class>/*.jpg). Decoding
is not timed; the whitening init, training and the final TTA evaluation are (as airbench times
them). Prints one JSON object per run on stdout:
  {"run", "seconds", "train_seconds", "eval_seconds", "accuracy", "epochs": [...]}

  python scripts/airbench94_torch.py --data ../shared/data/cifar10 --runs 1
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def load_split(folder, limit_per_class=None):
    """uint8 images [N, 3, 32, 32] and labels, classes in alphabetical order."""
    from PIL import Image

    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(os.listdir(os.path.join(folder, name)))
        if limit_per_class:
            files = files[:limit_per_class]
        for f in files:
            with Image.open(os.path.join(folder, name, f)) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels)


def normalize(x):
    return (x.float() / 255 - MEAN) / STD


# --- the network -----------------------------------------------------------------------------

def conv(cin, cout, kernel=3, padding=1, bias=False):
    c = nn.Conv2d(cin, cout, kernel, padding=padding, bias=bias)
    if bias:
        nn.init.zeros_(c.bias)
    with torch.no_grad():  # the first `cin` filters start as identities
        nn.init.dirac_(c.weight[: min(cin, cout)])
    return c


def norm(width):
    # airbench's "momentum 0.6" keeps 0.6 of the running statistics: PyTorch's momentum 0.4.
    bn = nn.BatchNorm2d(width, eps=1e-12, momentum=0.4)
    bn.weight.requires_grad = False
    return bn


def network(classes=10, widths=(64, 256, 256)):
    layers = [conv(3, 24, kernel=2, padding=0, bias=True), nn.GELU()]
    cin = 24
    for w in widths:
        layers += [conv(cin, w), nn.MaxPool2d(2), norm(w), nn.GELU(), conv(w, w), norm(w), nn.GELU()]
        cin = w
    layers += [nn.MaxPool2d(3), nn.Flatten(), nn.Linear(cin, classes, bias=False)]
    net = nn.Sequential(*layers)
    net[0].weight.requires_grad = False
    return net


class Scaled(nn.Module):
    def __init__(self, net, scale):
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x):
        return self.net(x) * self.scale


def whiten(layer, images, eps=5e-4):
    """Filters: eigenvectors of the 2x2 patch covariance over 1/sqrt(lambda + eps), and negated."""
    c, kh, kw = images.shape[1], layer.weight.shape[2], layer.weight.shape[3]
    patches = images.unfold(2, kh, 1).unfold(3, kw, 1)  # N, C, H', W', kh, kw
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw).double()
    cov = patches.T @ patches / len(patches)
    values, vectors = torch.linalg.eigh(cov)
    values, vectors = values.flip(0), vectors.T.flip(0)
    filters = (vectors / torch.sqrt(values.clamp(min=0) + eps).unsqueeze(1)).float().view(-1, c, kh, kw)
    with torch.no_grad():
        layer.weight.copy_(torch.cat([filters, -filters]))
        layer.bias.zero_()


# --- data augmentation -----------------------------------------------------------------------

def translate(x, pad, gen):
    """Each image shifted by up to `pad` px each way, borders reflected."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    out = torch.empty_like(x)
    for sy in range(2 * pad + 1):
        for sx in range(2 * pad + 1):
            m = (dy == sy) & (dx == sx)
            out[m] = padded[m, :, sy : sy + h, sx : sx + w]
    return out


# --- evaluation ------------------------------------------------------------------------------

def tta_logits(net, x):
    mirror = lambda v: 0.5 * net(v) + 0.5 * net(v.flip(-1))
    padded = F.pad(x, (1,) * 4, mode="reflect")
    shifted = 0.5 * mirror(padded[:, :, :32, :32]) + 0.5 * mirror(padded[:, :, 2:, 2:])
    return 0.5 * mirror(x) + 0.5 * shifted


def accuracy(net, x, y, tta, batch=1000):
    net.eval()
    with torch.no_grad():
        hits = 0
        for i in range(0, len(x), batch):
            xb = x[i : i + batch]
            logits = tta_logits(net, xb) if tta else net(xb)
            hits += (logits.argmax(1) == y[i : i + batch]).sum().item()
    return hits / len(x)


# --- the recipe ------------------------------------------------------------------------------

def train(train_x, train_y, test_x, test_y, epochs, seed, eval_each_epoch, log):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    batch, momentum = 1024, 0.85
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr = 11.5 / kilostep  # for the loss summed over the batch, as airbench writes it
    wd = 0.0153 * batch / kilostep
    steps_per_epoch = len(train_x) // batch
    total = math.ceil(steps_per_epoch * epochs)
    schedule = np.interp(np.arange(total + 1), [0, int(0.23 * total), total], [0.2, 1.0, 0.07])

    body = network(classes=int(train_y.max()) + 1)
    net = Scaled(body, 1 / 9)
    biases = [p for n, p in net.named_parameters() if p.requires_grad and isinstance(dict(net.named_modules())[n.rsplit(".", 1)[0]], nn.BatchNorm2d)]
    ids = {id(p) for p in biases}
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in ids]
    opt = torch.optim.SGD(
        [dict(params=biases, lr=lr * 64, weight_decay=wd / (lr * 64)), dict(params=rest, lr=lr, weight_decay=wd / lr)],
        momentum=momentum,
        nesterov=True,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: schedule[min(i, total)])

    start = time.perf_counter()
    n = min(5000, len(train_x))
    whiten(body[0], normalize(train_x[torch.arange(n) * (len(train_x) // n)]))
    images = normalize(train_x)
    flip_first = torch.rand(len(images), generator=gen) < 0.5
    slow, step, records = None, 0, []
    for epoch in range(math.ceil(epochs)):
        t0 = time.perf_counter()
        body[0].bias.requires_grad = epoch < 3
        flips = flip_first ^ (epoch % 2 == 1)
        x_epoch = translate(torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images), 2, gen)
        order = torch.randperm(len(images), generator=gen)
        net.train()
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[b * batch : (b + 1) * batch]
            loss = F.cross_entropy(net(x_epoch[idx]), train_y[idx], label_smoothing=0.2, reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if epoch >= 3 and step % 5 == 0:
                state = [v for v in net.state_dict().values() if v.dtype == torch.float32]
                if slow is None:
                    slow = [v.clone() for v in state]
                else:
                    decay = 0.95**5 * (step / total) ** 3
                    for s, v in zip(slow, state):
                        s.lerp_(v, 1 - decay)
                        v.copy_(s)
        if slow is not None:
            state = [v for v in net.state_dict().values() if v.dtype == torch.float32]
            for s, v in zip(slow, state):
                v.copy_(s)
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "seconds": seconds, "train_loss": loss.item() / len(idx)}
        if eval_each_epoch:
            record["test_accuracy"] = accuracy(net, normalize(test_x), test_y, tta=False)
        records.append(record)
        log(record)
    train_seconds = time.perf_counter() - start
    t0 = time.perf_counter()
    acc = accuracy(net, normalize(test_x), test_y, tta=True)
    eval_seconds = time.perf_counter() - t0
    return {"seconds": train_seconds + eval_seconds, "train_seconds": train_seconds, "eval_seconds": eval_seconds, "accuracy": acc, "epochs": records}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="CIFAR-10 as image folders (train/, test/)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--epochs", type=float, default=9.9)
    ap.add_argument("--limit-per-class", type=int, default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--eval-each-epoch", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    train_x, train_y = load_split(os.path.join(a.data, "train"), a.limit_per_class)
    test_x, test_y = load_split(os.path.join(a.data, "test"), a.limit_per_class)
    log = lambda r: print(json.dumps(r), file=sys.stderr, flush=True)
    for run in range(a.runs):
        result = train(train_x, train_y, test_x, test_y, a.epochs, a.first_seed + run, a.eval_each_epoch, log)
        print(json.dumps({"run": run, "seed": a.first_seed + run, "torch": torch.__version__, "threads": torch.get_num_threads(), **result}), flush=True)


if __name__ == "__main__":
    main()
