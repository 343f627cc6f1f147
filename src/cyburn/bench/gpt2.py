"""The gpt2 benchmark suite: cyburn.gpt2 at GPT-2 small's shapes (124M parameters, float32)
against the same model in PyTorch eager, written the way PyTorch users write it.

    python -m cyburn.bench.gpt2          # everything below, about three minutes on 2 cores

- one training step (forward, backward, AdamW) at B=4, T=64, and where cyburn's step goes:
  matrix products, cyburn's functions, the rest (sampled from a second thread); the step
  once more with cyburn's kernels on one thread, which measures what alternating between
  cyburn's OpenMP team and NumPy's BLAS threads costs (each pool's threads spin for a while
  after their work, taking the cores the other pool's threads need); and the step's NumPy
  part alone (every cyburn kernel, the optimizer's included, answered from a record, as in
  the compose suite): no choice of cyburn's makes the step faster than that;
- greedy generation of 64 tokens after a 64-token prompt, each side with its key/value cache
  (cyburn also with its kernels on one thread), in tokens/s beside the ceiling: the read
  bandwidth measured in the same run over the bytes of weights every token reads;
- adamw_step over 124M parameters in one array against torch.optim.AdamW(fused=True),
  NumPy's multi-pass update and the probe of adamw_step's memory pattern (read four arrays,
  write three; see cyburn.bench.machine);
- peak memory of a training step (resident high-water mark less the resident set with the
  model built), each library in a fresh process.

gpt2_rows() yields the adamw_step row of cyburn.bench.cases's registry; run_gpt2(args,
progress) measures and prints the rest.
"""
import argparse
import linecache
import os
import subprocess
import sys
import threading
import time

import numpy as np

import cyburn as cb
from cyburn.bench import machine
from cyburn.bench.cases import Case, Part, large_rows
from cyburn.bench.compose import KERNELS, _Recorded
from cyburn.bench.report import Progress, describe_run, print_legend, run_rows
from cyburn.gpt2 import GPT2, AdamW, GPT2Config

try:
    import torch
except ImportError:          # PyTorch is an optional peer
    torch = None

SMALL = GPT2Config()                    # GPT-2 small, 124M parameters
BATCH, CONTEXT = 4, 64                  # llm.c's CPU reference shape
PROMPT, NEW_TOKENS = 64, 64
SERIAL = "cyburn, kernels on 1 thread"      # NumPy's BLAS on all: no two thread pools in turn
NUMPY_PART = "its NumPy part alone"         # every kernel answered from a record: the floor
ADAMW_ELEMENTS = sum(int(np.prod(s)) for s in SMALL.parameter_shapes().values())
ADAMW = dict(lr=1e-4, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)


def numpy_adamw_step(param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps,
                     weight_decay, step, scratch):
    """AdamW as a careful NumPy user writes it: in place, one operation per pass over memory
    (eleven passes, one scratch array, no temporaries)."""
    param *= 1 - lr * weight_decay
    exp_avg *= beta1
    np.multiply(grad, 1 - beta1, out=scratch)
    exp_avg += scratch
    exp_avg_sq *= beta2
    np.multiply(grad, grad, out=scratch)
    scratch *= 1 - beta2
    exp_avg_sq += scratch
    np.sqrt(exp_avg_sq, out=scratch)
    scratch *= 1 / np.sqrt(1 - beta2**step)
    scratch += eps
    np.divide(exp_avg, scratch, out=scratch)
    scratch *= -lr / (1 - beta1**step)
    param += scratch


def adamw_case(shape):
    """adamw_step over one array of float32 parameters of `shape` (n,): cyburn, NumPy's
    multi-pass update and torch.optim.AdamW(fused=True)."""
    (n,) = shape
    rng = np.random.default_rng(0)
    param, grad = (rng.standard_normal(n, dtype=np.float32) for _ in range(2))
    exp_avg, exp_avg_sq = np.zeros(n, np.float32), np.zeros(n, np.float32)
    part = Part(param)                  # NumPy's eleven passes run on a part of the arrays
    numpy_arrays = part(param, grad, exp_avg, exp_avg_sq)
    scratch = np.empty_like(numpy_arrays[0])
    steps = {"cyburn": 0, "numpy": 0}

    def ours():
        steps["cyburn"] += 1
        cb.adamw_step(param, grad, exp_avg, exp_avg_sq, step=steps["cyburn"], **ADAMW)

    def numpy():
        steps["numpy"] += 1
        numpy_adamw_step(*numpy_arrays, step=steps["numpy"], scratch=scratch, **ADAMW)

    contenders = {"cyburn": ours, "numpy": numpy}
    if torch is not None:
        t_param = torch.from_numpy(param.copy()).requires_grad_()
        t_param.grad = torch.from_numpy(grad)
        optimizer = torch.optim.AdamW([t_param], lr=ADAMW["lr"], betas=(0.9, 0.999), eps=1e-8,
                                      weight_decay=ADAMW["weight_decay"], fused=True)
        contenders["torch"] = optimizer.step
    return Case(contenders, "adamw", param, scaled=part.scaled())


def gpt2_rows():
    """The adamw_step rows over GPT-2 small's parameters in one array (a training step is no
    row: it has no bytes to count)."""
    yield from large_rows("gpt2", "adamw_step", "in-place",
                          lambda s: f"{s[0] / 1e6:.0f}M params, 1 array", adamw_case,
                          (ADAMW_ELEMENTS,), "adamw", True)


# ---- a training step ------------------------------------------------------------------------

def _batch(config=SMALL):
    rng = np.random.default_rng(0)
    return (rng.integers(0, config.vocab_size, (BATCH, CONTEXT)),
            rng.integers(0, config.vocab_size, (BATCH, CONTEXT)))


def cyburn_trainer(model):
    """One training step of `model` on a fixed batch, as a function of no argument."""
    optimizer = AdamW(model.params, lr=1e-4, weight_decay=0.1)
    idx, targets = _batch(model.config)

    def step():
        _, grads = model.loss_and_grads(idx, targets)
        optimizer.step(grads)
    return step


def torch_trainer(params, config):
    """The same step in PyTorch eager, torch.optim.AdamW(fused=True)."""
    from cyburn.gpt2._torch import torch_gpt2
    model = torch_gpt2(params, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    idx, targets = (torch.from_numpy(a) for a in _batch(config))

    def step():
        loss = model(idx, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model, step


def interleaved_best(contenders, rounds):
    """Best seconds per call of each contender, one call of each per round (every call here
    takes long enough that what the previous one leaves behind does not matter)."""
    for f in contenders.values():
        f()                                             # first calls allocate and warm up
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, f in contenders.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


class StepSampler:
    """Where a thread spends its time, sampled from a second thread every `interval` seconds:
    "matmul" when the line running is a matrix product (`@` or matmul) in cyburn's code,
    "cyburn" inside cyburn's functions otherwise, else "elsewhere" (the model's NumPy glue:
    gathers, bias adds, sums, copies). Kernels and BLAS release the GIL, so the sampler sees
    them as they run; the switch interval is shortened so it also sees Python code."""

    PACKAGE = os.path.dirname(os.path.abspath(cb.__file__))
    MODEL = os.path.join(PACKAGE, "gpt2")

    def __init__(self, interval=0.0005):
        self.interval = interval
        self.counts = {"matmul": 0, "cyburn": 0, "elsewhere": 0}

    def classify(self, frame):
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(self.PACKAGE):
            return "elsewhere"
        code = linecache.getline(path, frame.f_lineno).split("#")[0]
        if "@" in code or "matmul" in code:
            return "matmul"
        return "elsewhere" if path.startswith(self.MODEL) else "cyburn"

    def run(self, f, calls):
        target = threading.get_ident()
        done = threading.Event()

        def sample():
            while not done.is_set():
                time.sleep(self.interval)
                frame = sys._current_frames().get(target)
                if frame is not None:
                    self.counts[self.classify(frame)] += 1

        saved = sys.getswitchinterval()
        sys.setswitchinterval(self.interval / 5)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            for _ in range(calls):
                f()
        finally:
            done.set()
            sampler.join()
            sys.setswitchinterval(saved)
        total = sum(self.counts.values())
        return {k: v / total for k, v in self.counts.items()}, total


# ---- generation and its ceiling ---------------------------------------------------------------

def read_bandwidth():
    """Bytes per second read from a 1 GiB float32 array (far beyond the caches), the best of
    three runs of each of: cyburn's read probe on its threads (cyburn.bench.machine), and a
    matrix-vector product (NumPy's BLAS, its threads: a decoding step's own access)."""
    a = np.ones(1 << 28, np.float32)
    matrix, vector = a.reshape(-1, 4096), np.ones(4096, np.float32)
    (probe,) = machine.probes("read", a).values()
    best = {}
    for name, f in ((f"read probe, {cb.get_num_threads()} threads", probe),
                    ("matrix @ vector", lambda: matrix @ vector)):
        f()
        best[name] = a.nbytes / min(_seconds(f) for _ in range(3))
    return best


def _seconds(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def weight_bytes_per_token(params):
    """The parameters a decoding step reads: everything but the position table (one row)."""
    return sum(p.nbytes for name, p in params.items() if name != "transformer.wpe.weight")


# ---- peak memory, in fresh processes ----------------------------------------------------------

PEAK_PROBE = """
import numpy as np
from cyburn.bench import gpt2 as b
from cyburn.gpt2 import GPT2
def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024
{build}
with open("/proc/self/clear_refs", "w") as f:       # the high-water mark restarts here
    f.write("5")
before = status("VmRSS")
{trainer}
for _ in range(2):
    step()
print(status("VmHWM") - before)
"""
PEAK_SETUP = {              # (building the model, making its training step)
    "cyburn": ("model = GPT2(b.SMALL)", "step = b.cyburn_trainer(model)"),
    "torch": ("import torch\ntorch.set_num_threads({threads})\nmodel = GPT2(b.SMALL)\n"
              "torch_model, step = b.torch_trainer(model.params, b.SMALL)\ndel model", ""),
}


def peak_memory():
    """Per library, in a fresh process: the resident high-water mark of making the optimizer
    and running two training steps, less the resident set with the model built (so:
    gradients, optimizer state, activations and temporaries)."""
    peaks = {}
    for name, (build, trainer) in PEAK_SETUP.items():
        if name == "torch" and torch is None:
            continue
        code = PEAK_PROBE.format(build=build.format(threads=cb.get_num_threads()),
                                 trainer=trainer)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True)
        peaks[name] = int(result.stdout.split()[-1])
    return peaks


# ---- the report -------------------------------------------------------------------------------

def run_gpt2(args, progress=None):
    """Measure and print the training step, its breakdown, generation and peak memory."""
    rounds = 3 if getattr(args, "quick", False) else 5
    say = (lambda what: progress.update(1, 1, "gpt2", what)) if progress else (lambda what: None)
    say("building GPT-2 small")
    model = GPT2(SMALL)
    params = {name: p.copy() for name, p in model.params.items()}
    contenders = {"cyburn": cyburn_trainer(model)}
    serial_kernels = cyburn_trainer(model)          # (its own optimizer, the same weights)

    def cyburn_serial_kernels():
        with cb.num_threads(1):
            serial_kernels()
    contenders[SERIAL] = cyburn_serial_kernels
    say("recording the kernels of a training step")
    numpy_step = cyburn_trainer(GPT2(SMALL))
    record = _Recorded(numpy_step, KERNELS + ("adamw_step",))

    def numpy_part():
        with record.answering():
            numpy_step()
    contenders[NUMPY_PART] = numpy_part
    if torch is not None:
        torch_model, contenders["torch"] = torch_trainer(params, SMALL)
    say(f"training step, B={BATCH} T={CONTEXT}, {rounds} rounds")
    step_times = interleaved_best(contenders, rounds)
    say("training step breakdown (sampled)")
    shares, samples = StepSampler().run(contenders["cyburn"], rounds)

    say("generation: read bandwidth")
    bandwidth = read_bandwidth()
    say(f"generation: {NEW_TOKENS} tokens after {PROMPT}, greedy, with caches")
    prompt = np.random.default_rng(1).integers(0, SMALL.vocab_size, (1, PROMPT))
    generators = {"cyburn": lambda: model.generate(prompt, NEW_TOKENS, temperature=0)}

    def generate_serial_kernels():
        with cb.num_threads(1):
            model.generate(prompt, NEW_TOKENS, temperature=0)
    generators[SERIAL] = generate_serial_kernels
    if torch is not None:
        t_prompt = torch.from_numpy(prompt)
        generators["torch"] = lambda: torch_model.generate_greedy(t_prompt, NEW_TOKENS)
    gen_times = interleaved_best(generators, max(2, rounds - 2))
    say("peak memory of a training step, in fresh processes")
    del contenders, generators
    peaks = peak_memory()
    if progress:
        progress.clear()

    print(f"GPT-2 small ({sum(p.size for p in params.values()) / 1e6:.1f}M parameters, "
          f"float32), {cb.get_num_threads()} threads")
    print(f"training step (forward, backward, AdamW), B={BATCH} T={CONTEXT}, best of {rounds}:")
    for name, t in step_times.items():
        print(f"  {name:<{len(SERIAL)}} {t * 1e3:8.0f} ms {BATCH * CONTEXT / t:8.0f} tokens/s "
              f"{t / step_times['cyburn']:6.2f}x cyburn's time")
    print(f"  cyburn's step: {100 * shares['matmul']:.0f}% matrix products (NumPy/BLAS), "
          f"{100 * shares['cyburn']:.0f}% cyburn functions, {100 * shares['elsewhere']:.0f}% "
          f"elsewhere ({samples} samples over {rounds} steps)")
    per_token = weight_bytes_per_token(params)
    best_bw = max(bandwidth.values())
    print(f"greedy generation, {NEW_TOKENS} new tokens after a {PROMPT}-token prompt, KV "
          f"caches, best of {max(2, rounds - 2)}:")
    for name, t in gen_times.items():
        print(f"  {name:<{len(SERIAL)}} {NEW_TOKENS / t:8.1f} tokens/s "
              f"{t / gen_times['cyburn']:6.2f}x cyburn's time")
    print(f"  {'ceiling':<{len(SERIAL)}} {best_bw / per_token:8.1f} tokens/s = "
          f"{per_token / 2**20:.0f} MiB of "
          f"weights per token / read bandwidth "
          + ", ".join(f"{v / 1e9:.1f} GB/s ({k})" for k, v in bandwidth.items())
          + " over 1 GiB")
    print("peak memory of two training steps (optimizer made, 2 steps) over the built "
          "model's resident set (fresh processes):")
    for name, peak in peaks.items():
        ratio = f"   {peak / peaks['cyburn']:.2f}x cyburn's" if name != "cyburn" else ""
        print(f"  {name:<7} {peak / 2**20:8.0f} MiB{ratio}")
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cyburn.bench.gpt2", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--threads", type=int, default=None, help="threads for cyburn and torch")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    args.seconds, args.rounds = (0.2, 15) if args.quick else (1.0, 50)
    args.scaling = False
    if args.threads:
        cb.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(cb.get_num_threads())
    print(describe_run(args))
    print()
    progress = Progress(enabled=not args.no_progress)
    run_rows("gpt2", list(gpt2_rows()), args, progress)
    print_legend(False)
    run_gpt2(args, progress)


if __name__ == "__main__":
    main()
