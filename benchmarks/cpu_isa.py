"""How much the pipeline's dominant CPU work slows down without AVX-512 (CPUs with AVX2 only).

Times, in child processes, one train_seg step (DeepLab v3+ on EfficientNet-Lite0 at params.yaml's widths, 8 crops
of 192, SGD, channels-last as the stage runs it) and one CAM-network forward (a 320x240 image at scale 1, as
make_cam), first with every instruction set the CPU has (the reference), then with PyTorch capped at AVX2:
ATEN_CPU_CAPABILITY=avx2 for ATen's own kernels and ONEDNN_MAX_CPU_ISA=AVX2 for oneDNN's convolutions. On an
AVX-512 machine the ratio estimates what the missing instructions alone cost; a real AVX2-only CPU also differs in
clock, cores and caches.

    python benchmarks/cpu_isa.py [--threads 2] [--steps 6] [--quick]

--quick: 1 timed step on 2 crops of 64 and a 64x48 CAM input (checks it runs; the ratio means nothing there).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CAPS = {"reference (all the CPU has)": {}, "capped at AVX2": {"ATEN_CPU_CAPABILITY": "avx2",
                                                              "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def child(threads: int, steps: int, quick: bool) -> dict:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from textwsss.models.factory import build_cam_net, build_deeplab

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    seg = build_deeplab(pretrained="imagenet", aspp_channels=128, decoder_channels=96).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(seg.parameters(), lr=0.01, momentum=0.9)
    batch, crop = (2, 64) if quick else (8, 192)
    x = torch.rand(batch, 3, crop, crop).to(memory_format=torch.channels_last)
    y = torch.randint(0, 21, (batch, crop, crop))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(seg(x), y).backward()
        opt.step()

    cam = build_cam_net(pretrained="imagenet").eval().to(memory_format=torch.channels_last)
    image = torch.rand(1, 3, *((48, 64) if quick else (240, 320))).to(memory_format=torch.channels_last)

    def forward():
        with torch.inference_mode():
            cam(image)

    out = {"capability": torch.backends.cpu.get_cpu_capability()}
    for name, fn, n in (("train_seg step", step, steps), ("CAM forward", forward, 4 * steps)):
        fn()  # warm-up: oneDNN picks and caches its kernels
        best = float("inf")
        for _ in range(n):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        out[name] = best
    return out


def cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return "unknown CPU"
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Model name")), "?")
    return f"{model}, {'with' if 'avx512f' in text else 'without'} AVX-512"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="tiny inputs, 1 step: checks it runs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:  # one thread: on a loaded machine two spinning OpenMP threads stall each other
        args.steps, args.threads = 1, 1
    if args.child:
        print(json.dumps(child(args.threads, args.steps, args.quick)))
        return
    print(f"CPU: {cpu_model()}; {args.threads} threads; best of {args.steps} train_seg steps / "
          f"{4 * args.steps} CAM forwards")
    results = {}
    for name, env in CAPS.items():
        cmd = [sys.executable, __file__, "--child", "--threads", str(args.threads), "--steps", str(args.steps)]
        run = subprocess.run(cmd + ["--quick"] * args.quick, env={**os.environ, **env}, capture_output=True,
                             text=True)
        if run.returncode != 0:
            raise SystemExit(f"cpu_isa: the child run '{name}' failed:\n{run.stderr[-3000:]}")
        results[name] = json.loads(run.stdout.strip().splitlines()[-1])
    ref = results["reference (all the CPU has)"]
    print("| run | ATen capability | train_seg step (s) | ratio | CAM forward (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['capability']} | {r['train_seg step']:.3f} | "
              f"{r['train_seg step'] / ref['train_seg step']:.2f}x | {r['CAM forward']:.3f} | "
              f"{r['CAM forward'] / ref['CAM forward']:.2f}x |")
    capped = results["capped at AVX2"]
    print(f"speed-up of all the CPU has vs capped at AVX2: train_seg step "
          f"{capped['train_seg step'] / ref['train_seg step']:.2f}x, CAM forward "
          f"{capped['CAM forward'] / ref['CAM forward']:.2f}x")


if __name__ == "__main__":
    main()
