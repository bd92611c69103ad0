"""Where a training step's time goes: minigen's ops against PyTorch's, per model variant.

    python benchmarks/breakdown.py [--models gan,ddpm] [--rounds 2] [--steps 5] [--threads 2] [--out FILE]

The step is benchmarks/run.py's (batch 128, real mnist-5k digits, the twin with the same weights). Each
framework runs alone in a fresh process, alternating for --rounds rounds, as in the harness. In each
process, after warm-up steps, --steps steps are timed whole (the step time), then --steps more op by op:

* minigen: each op's forward is the time from the previous op's result to its own (the op, and the
  model code just before it); each graph node's backward is Tensor.backward's call of it; the
  optimizers' `step` is timed apart. Found by wrapping `make_result` and `_pass_to_parents`.
* PyTorch: torch.profiler's self CPU time of every op; an op under `Optimizer.step` counts as the optimizer.

Ops fall into CATEGORIES by name (an op of PyTorch's that matches none takes the category of the
nearest enclosing op that does, e.g. the sum inside a convolution's backward is conv). The report:
per category the milliseconds per step of each framework (medians over rounds) and their ratio, and
each framework's costliest ops. Instrumenting adds a little to both; the split is what it is for.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))            # `benchmarks.` importable when run as a script

from benchmarks.common import THREADS, child_or_args, machine_info, spawn_child, variant, write_json  # noqa: E402

# (category, pattern on the lower-cased op name), first match wins
CATEGORIES = (("optimizer", r"optimizer"), ("conv", r"conv"), ("normalization", r"norm"),
              ("matmul", r"addmm|bmm|\bmm|matmul|linear"),
              ("activation", r"relu|silu|sigmoid|tanh|gelu|softplus|\belu|threshold"))
WARMUP = 3


def category(name: str) -> str | None:
    """The category an op's name falls into, or None."""
    lowered = name.lower()
    return next((cat for cat, pattern in CATEGORIES if re.search(pattern, lowered)), None)


def _median_step(step, steps: int) -> float:
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def minigen_ops(step, steps: int) -> dict:
    """{op name (forward) or "name backward" or "optimizer": seconds per step} while running `steps` steps."""
    import importlib
    optim, tensor = (importlib.import_module(f"minigen.{name}") for name in ("optim", "tensor"))  # (minigen.tensor is
    totals = defaultdict(float)                                                                    # also a function)
    mark = [0.0]

    def restart():
        mark[0] = time.perf_counter()

    def make_result(data, parents, backward, op, original=tensor.make_result):
        now = time.perf_counter()
        totals[op] += now - mark[0]
        out = original(data, parents, backward, op)
        restart()
        return out

    def pass_to_parents(node, g, grads, original=tensor._pass_to_parents):
        start = time.perf_counter()
        original(node, g, grads)
        totals[f"{node._op} backward"] += time.perf_counter() - start
        restart()

    def optimizer_step(self, original=optim.Optimizer.step):
        start = time.perf_counter()
        original(self)
        totals["optimizer"] += time.perf_counter() - start
        restart()
    modules = [m for name, m in sys.modules.items() if name.startswith("minigen.") and hasattr(m, "make_result")]
    saved = [(m, "make_result", m.make_result) for m in modules]
    saved += [(tensor, "_pass_to_parents", tensor._pass_to_parents),
              (optim.Optimizer, "step", optim.Optimizer.step)]
    for m in modules:
        m.make_result = make_result
    tensor._pass_to_parents, optim.Optimizer.step = pass_to_parents, optimizer_step
    try:
        for _ in range(steps):
            restart()
            step()
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
    return {name: seconds / steps for name, seconds in totals.items()}


def torch_ops(step, steps: int) -> dict:
    """{op name: self CPU seconds per step} from torch.profiler; ops under Optimizer.step as "optimizer"."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals = defaultdict(float)
    for event in prof.events():
        name, parent = event.name, event.cpu_parent
        while parent is not None:
            if parent.name.startswith("Optimizer."):
                name = "optimizer"
                break
            if category(name) is None and category(parent.name) is not None:
                name = parent.name
            parent = parent.cpu_parent
        totals[name] += event.self_cpu_time_total * 1e-6
    return {name: seconds / steps for name, seconds in totals.items()}


def child(spec: str) -> dict:
    """In this process: spec "framework model steps": the step time and the per-op seconds per step."""
    framework, model, steps = spec.split()
    from benchmarks.common import set_threads, settle_interpreter
    set_threads(int(os.environ["NUMBA_NUM_THREADS"]), framework)
    from benchmarks.run import train_step_case
    from minigen.kernels import plan
    with plan.default_mode("measure"):              # as the benchmark worker runs minigen
        step = train_step_case(framework, model)
        settle_interpreter()
        for _ in range(WARMUP):
            step()
        step_s = _median_step(step, int(steps))
        ops = (torch_ops if framework == "torch" else minigen_ops)(step, int(steps))
    return {"step_s": step_s, "ops": ops}


def by_category(ops: dict) -> dict:
    """{category: seconds} of per-op seconds ("other" for the ops no pattern names)."""
    out = defaultdict(float)
    for name, seconds in ops.items():
        out[category(name) or "other"] += seconds
    return dict(out)


def summarize(runs: list[dict]) -> dict:
    """Per framework's runs (one per round): the median step time, per-category and per-op medians."""
    cats = [by_category(r["ops"]) for r in runs]
    names = {name for r in runs for name in r["ops"]}
    return {"step_s": statistics.median(r["step_s"] for r in runs),
            "categories": {c: statistics.median(x.get(c, 0.0) for x in cats)
                           for c in sorted({c for x in cats for c in x})},
            "ops": {n: statistics.median(r["ops"].get(n, 0.0) for r in runs) for n in names}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vae,flow,pixelcnn,ddpm,gan")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--top", type=int, default=6, help="the costliest ops listed per framework")
    p.add_argument("--out", help="write the results here as JSON")
    args = child_or_args(p, argv, child)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in models:
        try:
            variant(model)
        except KeyError as e:
            raise SystemExit(e.args[0]) from None
    if args.rounds < 1 or args.steps < 1:
        p.error(f"--rounds and --steps must be at least 1, got {args.rounds} and {args.steps}")
    from benchmarks.common import try_torch
    frameworks = ["minigen", "torch"] if try_torch() is not None else ["minigen"]
    machine = machine_info(args.threads)
    print(f"{machine['cpu']}, {machine['blas']}, {args.threads} threads; ms per step at batch 128, "
          f"medians of {args.rounds} rounds")
    report = {"machine": machine, "rounds": args.rounds, "steps": args.steps, "models": {}}
    for model in models:
        runs = defaultdict(list)
        for _ in range(args.rounds):
            for fw in frameworks:
                runs[fw].append(spawn_child(__file__, f"{fw} {model} {args.steps}", args.threads))
        result = {fw: summarize(runs[fw]) for fw in frameworks}
        report["models"][model] = result
        print(f"\n{model}: step " + ", ".join(f"{fw} {1e3 * r['step_s']:.1f} ms" for fw, r in result.items()))
        cats = sorted({c for r in result.values() for c in r["categories"]})
        for c in cats:
            cells = [result[fw]["categories"].get(c, 0.0) for fw in frameworks]
            ratio = f"{cells[0] / cells[1]:6.2f}x" if len(cells) == 2 and cells[1] > 0 else ""
            print(f"  {c:14s} " + " ".join(f"{1e3 * s:8.1f}" for s in cells) + f"  {ratio}")
        for fw in frameworks:
            top = sorted(result[fw]["ops"].items(), key=lambda kv: -kv[1])[:args.top]
            print(f"  {fw} costliest: " + ", ".join(f"{n} {1e3 * s:.1f}" for n, s in top))
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
