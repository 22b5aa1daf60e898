#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus (fuzz/corpus/<target>/): a few small valid inputs and
near misses for each loader, so a fuzzing run starts from inputs that reach deep into the
parser, and CI replays them (scheduler/tests/fuzz_corpus.rs).

    python3 -m venv "$VENV" && "$VENV"/bin/pip install safetensors numpy pillow   # VENV: any folder
    "$VENV"/bin/python scripts/make_fuzz_corpus.py        # from the repository root
"""
import io
import json
import os
import struct

import numpy as np
from PIL import Image
from safetensors.numpy import save

ROOT = os.path.join(os.path.dirname(__file__), "..", "fuzz", "corpus")


def write(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data)


def checkpoints():
    rng = np.random.default_rng(0)
    good = save({"w": rng.standard_normal((3, 4)).astype(np.float32), "b": np.zeros(3, np.float32)}, metadata={"model": "simple-cnn", "epoch": "1"})
    write("checkpoint", "f32", good)
    write("checkpoint", "f16_bf16_i64", save({"h": np.ones((2, 2), np.float16), "n": np.array([7], np.int64)}))
    write("checkpoint", "truncated", good[: len(good) - 5])
    header = json.dumps({"x": {"dtype": "F32", "shape": [1, 2], "data_offsets": [0, 4]}}).encode()
    write("checkpoint", "short_data", struct.pack("<Q", len(header)) + header + b"\0" * 4)
    header = json.dumps({"x": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}, "__metadata__": {"model": "alexnet"}}).encode()
    write("checkpoint", "rank0", struct.pack("<Q", len(header)) + header + b"\0" * 4)


def cifar():
    record = bytes([3]) + bytes(i % 251 for i in range(3072))
    write("cifar_bin", "two_records", record * 2)
    write("cifar_bin", "bad_label", bytes([12]) + record[1:])
    write("cifar_bin", "truncated", record + record[:100])


def images():
    a = (np.arange(4 * 4 * 3) * 13 % 256).astype(np.uint8).reshape(4, 4, 3)
    for fmt, name in [("PNG", "tiny.png"), ("JPEG", "tiny.jpg")]:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format=fmt)
        write("image_decode", name, buf.getvalue())
        write("image_decode", name + ".truncated", buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.fromarray(a[:, :, 0]).save(buf, format="PNG")
    write("image_decode", "gray.png", buf.getvalue())


def plans():
    write("plan", "good.json", json.dumps({"classes": 4, "tasks": [[0, 2], [1, 3]], "budget_secs": 5.0}).encode())
    write("plan", "empty_task.json", json.dumps({"classes": 2, "tasks": [[0, 1], []], "budget_secs": 5.0}).encode())
    write("plan", "huge_classes.json", json.dumps({"classes": 10**18, "tasks": [[0]], "budget_secs": 5.0}).encode())
    write("plan", "negative_budget.json", json.dumps({"classes": 2, "tasks": [[0], [1]], "budget_secs": -1}).encode())
    write("plan", "duplicate_class.json", json.dumps({"classes": 2, "tasks": [[0, 0], [1]], "budget_secs": 1}).encode())
    write("plan", "not_an_index.json", json.dumps({"classes": 2, "tasks": [[0, "x"], [1]], "budget_secs": 1}).encode())


if __name__ == "__main__":
    checkpoints()
    cifar()
    images()
    plans()
    print("wrote", {t: sorted(os.listdir(os.path.join(ROOT, t))) for t in sorted(os.listdir(ROOT))})
