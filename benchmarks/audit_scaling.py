"""Memorisation audit cost: time and peak memory against the number of synthetic samples, real set fixed.

    python benchmarks/audit_scaling.py                      # 1k / 10k / 50k synthetic vs 10k real, 112 px
    python benchmarks/audit_scaling.py --quick              # 500 / 1k / 2k synthetic vs 1k real (seconds)

Random images and unit features stand in for real ones: the audit's cost depends on the sizes only. Images are kept
in fp16 (as the audit's callers may hold them) and converted a chunk at a time. Peak memory is the process's peak
resident memory during the audit (``VmHWM``, reset before each run) minus the resident memory with the inputs
already built: the audit's own working memory, which must stay flat while the time grows linearly.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import torch

from rlsyn_trl.generation.audit import AuditThresholds, audit_images, calibrate_thresholds

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{STATUS} has no {field} line")


def measure(work) -> tuple[float, float]:
    """Seconds and peak extra resident MiB of ``work()`` (Linux: the peak is reset through ``clear_refs``)."""
    try:
        CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident size
    except OSError as error:
        raise SystemExit(f"Peak memory needs a writable {CLEAR_REFS} (Linux): {error}") from error
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    return seconds, (_status_kib("VmHWM") - before) / 1024


def images(count: int, channels: int, resolution: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random images in [-1, 1], fp16, built in blocks so the fp32 intermediate stays small."""
    blocks = [
        (torch.rand(min(1024, count - start), channels, resolution, resolution, generator=generator) * 2 - 1).half()
        for start in range(0, count, 1024)
    ]
    return torch.cat(blocks)


def features(count: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(count, dim, generator=generator), dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--real", type=int, default=10_000)
    parser.add_argument("--identities", type=int, default=500, help="Real identities (for the threshold pairs).")
    parser.add_argument("--resolution", type=int, default=112)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--feature-dim", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="500 / 1k / 2k synthetic against 1k real.")
    args = parser.parse_args()
    if args.quick:
        args.synthetic, args.real, args.identities = [500, 1_000, 2_000], 1_000, 50
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    real_images = images(args.real, args.channels, args.resolution, generator)
    real_features = features(args.real, args.feature_dim, generator).to(args.device)
    labels = torch.arange(args.real) % args.identities
    print(
        f"real: {args.real} images ({args.identities} identities) at {args.channels}x{args.resolution}x"
        f"{args.resolution}, features {args.feature_dim}-d; chunk {args.chunk_size}; device {args.device}; "
        f"torch threads {torch.get_num_threads()}"
    )
    seconds, peak = measure(lambda: calibrate_thresholds(real_images, real_features, labels))
    print(f"thresholds from per-identity pairs: {seconds:.1f} s, peak +{peak:.0f} MiB\n")
    thresholds = AuditThresholds(
        pixel=0.1, feature=0.3, percentile=5, criterion="either", source="private", num_pairs=1
    )
    print("| synthetic | real | seconds | ms / sample | time ratio / size ratio | peak extra MiB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    first = None
    for count in args.synthetic:
        synthetic_images = images(count, args.channels, args.resolution, generator)
        synthetic_features = features(count, args.feature_dim, generator).to(args.device)
        audit = partial(audit_images, synthetic_images, synthetic_features, real_images, real_features, thresholds)
        seconds, peak = measure(partial(audit, chunk_size=args.chunk_size, device=args.device))
        del synthetic_images, synthetic_features
        first = first or (count, seconds)
        slope = (seconds / first[1]) / (count / first[0])
        row = f"| {count:,} | {args.real:,} | {seconds:.1f} | {1000 * seconds / count:.2f} | {slope:.2f} | {peak:.0f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
