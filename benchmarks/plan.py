"""`minigen bench plan`: this machine's conv plan for the model families' convs, and what measuring it costs.

    python benchmarks/plan.py [--models vae-conv,flow-conv,pixelcnn,ddpm,gan] [--threads 2] [--out plan.json]

Per family, three fresh processes each take one training step at batch 128 (random digits) with
MINIGEN_PLAN=measure (kernels/plan.py): the first with an empty wisdom folder (Numba compiles what
its on-disk cache lacks, and the plan times every candidate of every conv part it meets), the second
with another empty folder (everything in Numba's cache: the plan's timing only), the third reading
the wisdom the second wrote (nothing to compile or time). The plan's first-use cost is the second's first step
minus the third's. The table lists, per conv part, every candidate's time in the second process,
the winner, and the winner's GFLOP/s (2 x multiply-adds / time) as a fraction of NumPy's 1024^3
float32 matmul in this process.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))            # `benchmarks.` importable when run as a script

from benchmarks.common import THREADS, child_or_args, machine_info, spawn_child, write_json  # noqa: E402

FAMILIES = ("vae-conv", "flow-conv", "pixelcnn", "ddpm", "gan")


def child(model: str) -> dict:
    """In this process: one training step, timed, then a second; the plan's measurements."""
    from benchmarks.common import set_threads
    from benchmarks.run import train_step_case
    from minigen.kernels import plan
    set_threads()
    step = train_step_case("minigen", model, synthetic=True)
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    step()
    return {"first_step_s": first, "second_step_s": time.perf_counter() - start,
            "timings": plan.timings, "multiply_adds": plan.multiply_adds}


def _spawn(model: str, wisdom: str, threads: int) -> dict:
    return spawn_child(__file__, model, threads, MINIGEN_PLAN="measure", MINIGEN_DATA=wisdom)


def describe(key: str) -> str:
    """A plan key as "forward 128x64x14x14 -> 64, 3x3 s1" (masked convs: ", 5 taps")."""
    fields = dict(re.findall(r"(\w+)=(\([^()]*\)|[^,()\s]+)", key.split("ConvGeometry", 1)[1]))
    image, kernel = ("x".join(re.findall(r"\d+", fields[name])) for name in ("image", "kernel"))
    stride = re.findall(r"\d+", fields["stride"])[0]
    taps = key.split("taps=", 1)[1].split(", zero_tap", 1)[0]
    used = "" if taps == "None" else f", {taps.count('(') - 1} taps"
    return f"{key.split()[0]:11s} {image} -> {fields['c_out']}, {kernel} s{stride}{used}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(FAMILIES))
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--out", help="write the results here as JSON")
    args = child_or_args(p, argv, child)
    machine = machine_info(args.threads)
    sgemm = machine["numpy_matmul_gflops"]
    print(f"{machine['cpu']}, {machine['vector_bits']}-bit Numba loops, {machine['blas']}, {args.threads} threads; "
          f"sgemm {sgemm:.0f} GFLOP/s")
    results = {"machine": machine, "models": {}}
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory() as cold, tempfile.TemporaryDirectory() as warm:
            runs = [_spawn(model, folder, args.threads) for folder in (cold, warm, warm)]
        cost = runs[1]["first_step_s"] - runs[2]["first_step_s"]
        results["models"][model] = {"runs": runs, "plan_first_use_s": cost}
        print(f"\n{model}: first step {runs[0]['first_step_s']:.2f} s (Numba's cache as found), "
              f"{runs[1]['first_step_s']:.2f} s (measuring), {runs[2]['first_step_s']:.2f} s (from the wisdom); "
              f"the plan's first-use cost {cost:.2f} s; later steps {runs[2]['second_step_s']:.3f} s")
        print(f"  {'part and conv':44s} {'candidates, ms':54s} {'winner':9s} GFLOP/s  of sgemm")
        for key, seconds in runs[1]["timings"].items():
            winner = min(seconds, key=seconds.get)
            gflops = 2 * runs[1]["multiply_adds"][key] / seconds[winner] / 1e9
            cells = " ".join(f"{name} {1e3 * s:.1f}" for name, s in sorted(seconds.items(), key=lambda kv: kv[1]))
            print(f"  {describe(key):44s} {cells:54s} {winner:9s} {gflops:7.1f}  {gflops / sgemm:6.0%}")
    if args.out:
        write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
