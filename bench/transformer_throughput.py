"""Throughput of frozen-encoder embedding and of fine-tuning steps for a wav2vec2-base-sized model.

Usage::

    python bench/transformer_throughput.py --device auto            # GPU if there is one, else CPU
    python bench/transformer_throughput.py --device cuda --batch-sizes 8,32 --precisions fp32,amp
    python bench/transformer_throughput.py --device cpu --batch-sizes 2 --embed-clips 4 --train-steps 2

The model is built from ``Wav2Vec2Config()`` (hidden 768, 12 layers, ~95 M parameters: the size
of facebook/wav2vec2-base) with random weights: nothing is downloaded, and throughput does not
depend on the weights. Inputs are 3 s clips at 16 kHz whose sound (1.5-3 s) sits in zero
padding, as preprocessed clips do; they go through the project's own input code
(:func:`ser_udfs.encoders.inputs.encoder_batch`, :func:`ser_udfs.encoders.pooling.pooled_hidden_states`).

- **inputs**: the input code alone (trimming the padding, the feature extractor) on the host
  CPU, clips/s: the ceiling for the two figures below on a fast accelerator.
- **embed**: pooled hidden states of all 13 layers (what ``jobs/extract_embeddings.py`` computes
  per clip), clips/s.
- **fine-tune**: one optimiser step per batch as ``training.models.wav2vec2.fine_tune`` takes
  it (feature encoder frozen, forward, class-weighted cross-entropy, backward, gradient clipping,
  AdamW), steps/s and clips/s.

``fp32`` runs in float32; ``amp`` autocasts to bf16 (fp16 with loss scaling where bf16 is not
supported) on a GPU and to bf16 on a CPU. Needs only torch, transformers and numpy (no Spark);
prints a table (and writes JSON with ``--json``). On a GPU the defaults finish in well under
3 minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # started as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from ser_udfs.encoders.inputs import encoder_batch, receptive_field
from ser_udfs.encoders.pooling import pooled_hidden_states
from ser_udfs.encoders.torch_runtime import autocast, resolve_device, to_device

SAMPLE_RATE = 16000
CLIP_SECONDS = 3.0
N_CLASSES = 6
DEFAULTS = {  # per device type: batch sizes, clips embedded per measurement, timed steps per measurement
    "cuda": {"batch_sizes": "8,32", "embed_clips": 512, "train_steps": 20, "precisions": "fp32,amp"},
    "cpu": {"batch_sizes": "2", "embed_clips": 4, "train_steps": 2, "precisions": "fp32"},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-sizes", help="comma-separated (default: 8,32 on a GPU, 2 on the CPU)")
    parser.add_argument("--precisions", help="comma-separated fp32, amp (default: both on a GPU, fp32 on the CPU)")
    parser.add_argument("--embed-clips", type=int, help="clips embedded per measurement")
    parser.add_argument("--train-steps", type=int, help="timed optimiser steps per measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    for name, value in DEFAULTS[device.type].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.device = device
    args.batch_sizes = [int(size) for size in str(args.batch_sizes).split(",")]
    args.precisions = [name.strip() for name in str(args.precisions).split(",")]
    if set(args.precisions) - {"fp32", "amp"}:
        parser.error("--precisions takes fp32 and/or amp")
    return args


def amp_precision(device: torch.device) -> str:
    """What ``amp`` means on ``device``: bf16 where supported, else fp16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16"
    return "bf16"


def synthetic_clips(n: int, seed: int = 0) -> np.ndarray:
    """float32 ``[n, 48000]``: noisy harmonic tones of 1.5-3 s centred in zero padding."""
    rng = np.random.default_rng(seed)
    width = int(CLIP_SECONDS * SAMPLE_RATE)
    clips = np.zeros((n, width), dtype=np.float32)
    for row in range(n):
        length = int(rng.integers(width // 2, width + 1))
        time_s = np.arange(length) / SAMPLE_RATE
        pitch = rng.uniform(100, 300)
        wave = sum(np.sin(2 * np.pi * pitch * k * time_s) / k for k in range(1, 6)) + 0.05 * rng.normal(size=length)
        offset = (width - length) // 2
        clips[row, offset : offset + length] = 0.9 * wave / np.abs(wave).max()
    return clips


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_inputs(extractor: Any, clips: np.ndarray, *, batch_size: int) -> dict[str, float]:
    """Clips/s of the input code alone (trim padding, feature extractor) on the host CPU."""
    started = time.perf_counter()
    for start in range(0, len(clips), batch_size):
        encoder_batch(extractor, clips[start : start + batch_size], sample_rate_hz=SAMPLE_RATE, trim_padding=True,
                      min_samples=400)
    seconds = time.perf_counter() - started
    return {"clips": len(clips), "seconds": seconds, "clips_per_s": len(clips) / seconds}


def measure_embedding(model: Any, extractor: Any, clips: np.ndarray, *, batch_size: int, precision: str,
                      device: torch.device) -> dict[str, float]:
    """Clips/s of :func:`pooled_hidden_states` over ``clips`` (after one warm-up batch)."""
    pooled_hidden_states(model, extractor, clips[:batch_size], sample_rate_hz=SAMPLE_RATE, batch_size=batch_size,
                         precision=precision)
    synchronise(device)
    started = time.perf_counter()
    pooled_hidden_states(model, extractor, clips, sample_rate_hz=SAMPLE_RATE, batch_size=batch_size,
                         precision=precision)
    synchronise(device)
    seconds = time.perf_counter() - started
    return {"clips": len(clips), "seconds": seconds, "clips_per_s": len(clips) / seconds}


def measure_finetuning(model: Any, extractor: Any, clips: np.ndarray, *, batch_size: int, precision: str,
                       steps: int, device: torch.device) -> dict[str, float]:
    """Steps/s and clips/s of fine-tuning steps on ``batch_size`` clips (after two warm-up steps)."""
    model.train()
    model.freeze_feature_encoder()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    labels = np.arange(len(clips)) % N_CLASSES
    class_weights = torch.ones(N_CLASSES, device=device)
    min_samples = receptive_field(model.config.conv_kernel, model.config.conv_stride)

    def step(index: int) -> None:
        rows = np.arange(index * batch_size, (index + 1) * batch_size) % len(clips)
        inputs = encoder_batch(extractor, clips[rows], sample_rate_hz=SAMPLE_RATE, trim_padding=True,
                               min_samples=min_samples)
        with autocast(device, precision):
            logits = model(**inputs.tensors(device)).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), to_device(labels[rows], device), weight=class_weights)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for index in range(2):
        step(index)
    synchronise(device)
    started = time.perf_counter()
    for index in range(steps):
        step(index)
    synchronise(device)
    seconds = time.perf_counter() - started
    return {"steps": steps, "seconds": seconds, "steps_per_s": steps / seconds, "clips_per_s": steps * batch_size / seconds}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = args.device
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(num_labels=N_CLASSES)
    extractor = transformers.Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=True,
                                                      return_attention_mask=False)
    encoder = transformers.Wav2Vec2Model(config).to(device).eval()
    n_parameters = sum(p.numel() for p in encoder.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, transformers {transformers.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"model: wav2vec2-base-sized, random weights, {n_parameters / 1e6:.1f} M parameters, "
          f"{config.num_hidden_layers} layers, hidden {config.hidden_size}; clips {CLIP_SECONDS:.0f} s at {SAMPLE_RATE} Hz")
    clips = synthetic_clips(max(args.embed_clips, max(args.batch_sizes) * 2))
    results = []
    for batch_size in args.batch_sizes:
        figures = measure_inputs(extractor, clips[: args.embed_clips], batch_size=batch_size)
        results.append({"task": "inputs (host CPU)", "batch": batch_size, "precision": "-", **figures})
        print(f"  inputs    batch {batch_size:3d}: {figures['clips_per_s']:.1f} clips/s", flush=True)
    for precision_name in args.precisions:
        precision = "fp32" if precision_name == "fp32" else amp_precision(device)
        for batch_size in args.batch_sizes:
            figures = measure_embedding(encoder, extractor, clips[: args.embed_clips], batch_size=batch_size,
                                        precision=precision, device=device)
            results.append({"task": "embed", "batch": batch_size, "precision": precision, **figures})
            print(f"  embed     batch {batch_size:3d} {precision}: {figures['clips_per_s']:.3g} clips/s", flush=True)
    del encoder
    classifier = transformers.Wav2Vec2ForSequenceClassification(config).to(device)
    for precision_name in args.precisions:
        precision = "fp32" if precision_name == "fp32" else amp_precision(device)
        for batch_size in args.batch_sizes:
            try:
                figures = measure_finetuning(classifier, extractor, clips, batch_size=batch_size, precision=precision,
                                             steps=args.train_steps, device=device)
            except torch.OutOfMemoryError:
                print(f"  fine-tune batch {batch_size:3d} {precision}: out of memory", flush=True)
                torch.cuda.empty_cache()
                continue
            results.append({"task": "fine-tune", "batch": batch_size, "precision": precision, **figures})
            print(f"  fine-tune batch {batch_size:3d} {precision}: {figures['steps_per_s']:.3g} steps/s, "
                  f"{figures['clips_per_s']:.3g} clips/s", flush=True)
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")

    print()
    print("| task | batch | precision | clips/s | steps/s | device |")
    print("|---|---:|---|---:|---:|---|")
    for row in results:
        steps = f"{row['steps_per_s']:.3g}" if "steps_per_s" in row else ""
        print(f"| {row['task']} | {row['batch']} | {row['precision']} | {row['clips_per_s']:.3g} | {steps} | {name} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "device_name": name, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
