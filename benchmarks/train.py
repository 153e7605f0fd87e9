"""Seconds per training epoch of the shipped recipe: this code against an earlier revision, same run.

Every configuration is measured in its own child process, built from its own code's bundle
(``train.json`` + preset + data config, ``python -m monai.bundle``'s parser) exactly as ``kneeseg
train`` builds it: the training ``CacheDataset``/``DataLoader``, network, loss, optimizer and the
training inferer (AMP policy, memory format). For each epoch the child first draws all batches from
the loader (the **data** time: random slice choice, patches, augmentation, collation; the cache is
filled before) and then runs forward + loss + backward + Adam step on them as MONAI's
``SupervisedTrainer`` does (the **network** time). The achieved GFLOP/s count the real forward and
backward FLOPs of each batch shape (``torch.utils.flop_counter``) against this machine's measured
limit for a large 3 x 3 convolution, forward + backward (:func:`machine.conv_limit_gflops`).

Configurations (``--configs``):

- ``before``: the code of ``--baseline-rev`` (a git revision, checked out into a temporary
  worktree) with its own shipped recipe -- "today's code";
- ``same-maths``: this code with the earlier recipe and preprocessing definition (``patch_size=0``,
  ``steps`` at native resolution): the same computation as ``before``, so its per-iteration losses
  are compared with ``before``'s (only floating-point reordering may differ) and the ratio is the
  gain of the code changes alone;
- ``after``: this code with its shipped recipe (``kneeseg train --preset cpu --data knee_acl``).

The configurations are measured in ``--rounds`` interleaved rounds (before, same-maths, after,
before, ...) and the medians reported, because a shared 2-core machine drifts by tens of percent.
Unless the CPU already lacks AVX-512 and native bf16 (or ``--native``), the children run under
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, the fp32 path of a 2-core AVX2 machine.

    python benchmarks/train.py                        # knee-acl, 2 epochs, 2 rounds
    python benchmarks/train.py --epochs 1 --rounds 1  # quicker
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: the last commit before the training and preprocessing speed work (issue 24)
BASELINE_REV = "d0cd8ec"
#: this code with the recipe and definition of BASELINE_REV
SAME_MATHS = {"patch_size": 0, "preprocessing_options#steps": ["scale", "smooth", "equalize", "resize", "pad"]}


def _bundle_components(bundle: Path, preset: str, data: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The training pieces of a bundle, parsed as ``monai.bundle run training`` would."""
    from monai.bundle import ConfigParser

    configs = bundle / "configs"
    parser = ConfigParser()
    parser.read_meta(str(configs / "metadata.json"))
    parser.read_config([str(configs / "train.json"), str(configs / "presets" / f"{preset}.json"),
                        str(configs / "data" / f"{data}.json")])  # fmt: skip
    parser["bundle_root"] = str(bundle)
    for key, value in overrides.items():
        parser[key] = value
    parser.get_parsed_content("initialize")  # set_determinism(seed) and the start-up line, as the bundle's run does
    return {
        "loader": parser.get_parsed_content("train#dataloader"),
        "network": parser.get_parsed_content("network"),
        "loss": parser.get_parsed_content("loss"),
        "optimizer": parser.get_parsed_content("optimizer"),
        "inferer": parser.get_parsed_content("train#inferer"),
        "device": parser.get_parsed_content("device"),
        "settings": {k: parser.get_parsed_content(k) for k in ("spatial_size", "patch_size", "batch_size", "width",
                                                                "network_name", "max_epochs")},
    }


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one configuration in this process (the code on ``sys.path`` decides which)."""
    import copy

    import torch
    from monai.engines.utils import default_prepare_batch
    from torch.utils.flop_counter import FlopCounterMode

    import kneeseg
    from machine import conv_limit_gflops, describe

    bundle = Path(kneeseg.__file__).resolve().parents[1] / "bundles" / "knee_mri_seg"
    overrides = json.loads(args.overrides)
    t0 = time.perf_counter()
    parts = _bundle_components(bundle, args.preset, args.data, overrides)
    build_s = time.perf_counter() - t0
    loader, net, loss_fn, opt, inferer = (parts[k] for k in ("loader", "network", "loss", "optimizer", "inferer"))
    device = parts["device"]
    flops_by_shape: dict[tuple[int, ...], float] = {}

    def step_flops(inputs: torch.Tensor, targets: torch.Tensor) -> float:
        """Forward + backward FLOPs of a batch: counted once per slice shape on one slice, times
        the batch size (every layer's FLOPs are linear in the batch)."""
        key = tuple(inputs.shape[1:])
        if key not in flops_by_shape:
            probe = copy.deepcopy(net)
            counter = FlopCounterMode(display=False)
            with counter:
                loss_fn(inferer(inputs[:1].clone(), probe), targets[:1]).mean().backward()
            flops_by_shape[key] = counter.get_total_flops()
        return flops_by_shape[key] * int(inputs.shape[0])

    epochs = []
    losses: list[float] = []
    for _ in range(args.epochs):
        net.train()
        t0 = time.perf_counter()
        batches = [default_prepare_batch(b, device) for b in loader]
        data_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for inputs, targets in batches:
            opt.zero_grad(set_to_none=False)
            loss = loss_fn(inferer(inputs, net), targets).mean()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        net_s = time.perf_counter() - t0
        flops = sum(step_flops(i, t) for i, t in batches)
        epochs.append({
            "data_s": data_s, "network_s": net_s, "epoch_s": data_s + net_s, "batches": len(batches),
            "slices": sum(int(i.shape[0]) for i, _ in batches), "pixels_per_slice": int(batches[0][0][0].numel()),
            "gflop": flops / 1e9, "gflop_per_s": flops / 1e9 / net_s,
        })  # fmt: skip
    return {
        "settings": parts["settings"],
        "overrides": overrides,
        "build_and_cache_s": build_s,
        "epochs": epochs,
        "losses": losses,
        "machine": describe(),
        "conv_limit_fwd_bwd_gflop_per_s": conv_limit_gflops(torch.float32, backward=True) if args.limit else None,
    }


def run_child(code: Path, args: argparse.Namespace, overrides: dict[str, Any], limit: bool, env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="kneeseg-train-bench-") as tmp:
        out = Path(tmp) / "child.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--json", str(out), "--preset", args.preset,
               "--data", args.data, "--epochs", str(args.epochs), "--overrides", json.dumps(overrides)]  # fmt: skip
        if limit:
            cmd.append("--limit")
        env = dict(env, PYTHONPATH=str(code))
        subprocess.run(cmd, env=env, check=True, cwd=str(code), stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def _median(runs: list[dict], key: str) -> float:
    """Median over rounds of the mean over epochs of ``key``."""
    return statistics.median(statistics.fmean(e[key] for e in r["epochs"]) for r in runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="knee_acl", help="bundle data config (default: knee_acl)")
    p.add_argument("--preset", default="cpu", help="bundle preset (default: cpu)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per configuration and round (default: 2)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the configurations (default: 2)")
    p.add_argument("--configs", nargs="+", default=["before", "same-maths", "after"],
                   choices=["before", "same-maths", "after"])  # fmt: skip
    p.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of 'before' (default: %(default)s)")
    p.add_argument("--native", action="store_true", help="do not emulate an AVX2 CPU on a CPU with AVX-512")
    p.add_argument("--json", type=Path, default=PROJECT / "docs" / "tables" / "train_benchmark.json")
    # internal: one configuration in a child process
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--limit", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.json.write_text(json.dumps(child(args)))
        return 0

    import os

    import torch
    from machine import AVX2_ENV, avx2_env

    say = lambda line: print(line, flush=True)  # noqa: E731
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    env = dict(os.environ) if args.native or capability == "AVX2" else avx2_env()
    emulated = env is not os.environ and any(env.get(k) == v for k, v in AVX2_ENV.items())
    work = Path(tempfile.mkdtemp(prefix="kneeseg-train-bench-"))
    try:
        codes = {"same-maths": PROJECT, "after": PROJECT}
        overrides = {"before": {}, "same-maths": SAME_MATHS, "after": {}}
        if "before" in args.configs:
            base = work / "baseline"
            subprocess.run(["git", "-C", str(PROJECT), "worktree", "add", "--detach", str(base), args.baseline_rev],
                           check=True, capture_output=True)  # fmt: skip
            (work / "shared").symlink_to(PROJECT.parent / "shared")  # the data configs look beside the checkout
            codes["before"] = base
        runs: dict[str, list[dict]] = {c: [] for c in args.configs}
        for r in range(args.rounds):
            for c in args.configs:
                say(f"round {r + 1}/{args.rounds}: {c} ({args.epochs} epoch(s)) ...")
                res = run_child(codes[c], args, overrides[c], limit=(r == 0 and c == args.configs[0]), env=env)
                runs[c].append(res)
                e = res["epochs"]
                say("  " + "; ".join(f"epoch {i + 1}: {x['epoch_s']:.1f} s (data {x['data_s']:.1f}, network "
                                     f"{x['network_s']:.1f}, {x['gflop_per_s']:.0f} GFLOP/s)" for i, x in enumerate(e)))
        limit = next(r["conv_limit_fwd_bwd_gflop_per_s"] for r in runs[args.configs[0]] if r.get("conv_limit_fwd_bwd_gflop_per_s"))
        summary: dict[str, Any] = {}
        for c, rs in runs.items():
            summary[c] = {
                "epoch_s": _median(rs, "epoch_s"), "data_s": _median(rs, "data_s"), "network_s": _median(rs, "network_s"),
                "gflop_per_s": _median(rs, "gflop_per_s"), "slices_per_epoch": rs[0]["epochs"][0]["slices"],
                "pixels_per_slice": rs[0]["epochs"][0]["pixels_per_slice"], "batches": rs[0]["epochs"][0]["batches"],
                "settings": rs[0]["settings"], "overrides": rs[0]["overrides"],
                "epoch_s_all": [round(e["epoch_s"], 2) for r in rs for e in r["epochs"]],
            }  # fmt: skip
            summary[c]["share_of_limit"] = summary[c]["gflop_per_s"] / limit
        if "before" in summary:
            for c in summary:
                summary[c]["epoch_time_vs_before"] = summary[c]["epoch_s"] / summary["before"]["epoch_s"]
        loss_check = None
        if "before" in runs and "same-maths" in runs:
            a, b = runs["before"][0]["losses"], runs["same-maths"][0]["losses"]
            n = min(len(a), len(b))
            diffs = [abs(x - y) for x, y in zip(a[:n], b[:n])]
            loss_check = {"iterations": n, "max_abs_diff": max(diffs), "first_epoch_before": a[: len(a) // args.epochs],
                          "first_epoch_same_maths": b[: len(b) // args.epochs]}  # fmt: skip
        report = {
            "command": "python benchmarks/train.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "baseline_rev": args.baseline_rev,
            "environment": {k: env[k] for k in AVX2_ENV if k in env} if emulated else "native",
            "machine": runs[args.configs[0]][0]["machine"],
            "conv_limit_fwd_bwd_gflop_per_s": limit,
            "epochs_per_round": args.epochs,
            "rounds": args.rounds,
            "configs": summary,
            "loss_check_before_vs_same_maths": loss_check,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        say("")
        say(f"machine: {report['machine']}; environment: {report['environment']}")
        say(f"3x3 convolution limit, forward + backward: {limit:.0f} GFLOP/s")
        say("| configuration | slices x pixels | epoch s | data s | network s | GFLOP/s | of limit | vs before |")
        say("|---|---|---:|---:|---:|---:|---:|---:|")
        for c, s in summary.items():
            say(f"| {c} | {s['slices_per_epoch']} x {s['pixels_per_slice']} | {s['epoch_s']:.1f} | {s['data_s']:.1f} | "
                f"{s['network_s']:.1f} | {s['gflop_per_s']:.0f} | {s['share_of_limit']:.0%} | "
                f"{s.get('epoch_time_vs_before', float('nan')):.2f}x |")  # fmt: skip
        if loss_check:
            say(f"losses, before vs same-maths, {loss_check['iterations']} iterations: max |diff| "
                f"{loss_check['max_abs_diff']:.2e}")
        say(f"wrote {args.json}")
        return 0
    finally:
        if (work / "baseline").exists():
            subprocess.run(["git", "-C", str(PROJECT), "worktree", "remove", "--force", str(work / "baseline")],
                           capture_output=True)  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
