"""Train a small byte-level GPT-2 on Python's own standard library, then sample from it.

    python -m cyburn.gpt2                   # about a minute on 2 cores
    python -m cyburn.gpt2 --steps 1000 --layers 6 --embd 192
    python -m cyburn.gpt2 --compare         # the same steps in PyTorch too, both step times

The text is the standard library's .py files (found next to the `os` module), read at run
time: every machine with Python has it. Tokens are bytes (a vocabulary of 256). Progress
goes to stderr; the summary and the sample to stdout.
"""
import argparse
import math
import os
import sys
import time

import numpy as np

import cyburn as cb
from cyburn.gpt2 import GPT2, AdamW, GPT2Config

TEXT_BYTES = 4 << 20            # how much of the standard library to read
HELD_OUT = 0.1                  # the last tenth of the text, never trained on


def standard_library_text(limit=TEXT_BYTES):
    """Up to `limit` bytes of the standard library's Python sources, in a fixed order."""
    folder = os.path.dirname(os.__file__)
    chunks, size = [], 0
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py") and size < limit:
            with open(os.path.join(folder, name), "rb") as f:
                chunks.append(f.read())
            size += len(chunks[-1])
    if not chunks:
        raise SystemExit(f"no .py files found in {folder}")
    return b"\n".join(chunks)[:limit]


def batches(data, steps, batch, context, rng):
    """`steps` random windows of context + 1 bytes per sequence: (inputs, next bytes)."""
    for _ in range(steps):
        starts = rng.integers(0, len(data) - context - 1, batch)
        windows = data[starts[:, None] + np.arange(context + 1)].astype(np.int64)
        yield windows[:, :-1], windows[:, 1:]


def learning_rate(step, steps, peak):
    """Linear warm-up over the first 5 % of the steps, then a cosine down to peak / 10."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


class ProgressBar:
    """One line on stderr, redrawn in place on a terminal (else a line every tenth)."""

    def __init__(self, total, label, enabled=True):
        self.total, self.label, self.enabled = total, label, enabled
        self.tty = sys.stderr.isatty()

    def show(self, done, text):
        if not self.enabled:
            return
        if self.tty:
            filled = 30 * done // self.total
            print(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} "
                  f"{text}", end="", file=sys.stderr, flush=True)
            if done == self.total:
                print(file=sys.stderr)
        elif done == self.total or done % max(1, self.total // 10) == 0:
            print(f"{self.label} {done}/{self.total} {text}", file=sys.stderr, flush=True)


def train(step_fn, set_lr, train_data, args, label):
    """Run args.steps steps of step_fn(inputs, targets) -> loss; returns (losses, the median
    seconds per step, the seconds of all steps)."""
    rng = np.random.default_rng(args.seed)
    bar = ProgressBar(args.steps, label, not args.no_progress)
    losses, times = [], []
    tokens = args.batch * args.context
    for step, (x, y) in enumerate(batches(train_data, args.steps, args.batch, args.context, rng)):
        set_lr(learning_rate(step, args.steps, args.lr))
        start = time.perf_counter()
        losses.append(step_fn(x, y))
        times.append(time.perf_counter() - start)
        recent = np.mean(losses[-20:])
        bar.show(step + 1, f"loss {recent:.3f}  {tokens / np.median(times[-20:]):,.0f} tok/s")
    return losses, float(np.median(times)), float(np.sum(times))


def held_out_loss(model, data, args):
    """The mean loss on 8 batches of text the model never trained on."""
    rng = np.random.default_rng(args.seed + 1)
    return float(np.mean([model.loss_and_grads(x, y)[0]
                          for x, y in batches(data, 8, args.batch, args.context, rng)]))


def run_torch(initial, config, train_data, args):
    """The same steps (same initial weights, batches and learning rates) in PyTorch eager with
    torch.optim.AdamW(fused=True); returns what train returns."""
    import torch

    from cyburn.gpt2._torch import torch_gpt2
    torch.manual_seed(args.seed)
    torch.set_num_threads(cb.get_num_threads())
    model = torch_gpt2(initial, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                  fused=True)

    def step(x, y):
        loss = model(torch.from_numpy(x), torch.from_numpy(y))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def set_lr(lr):
        for group in optimizer.param_groups:
            group["lr"] = lr

    return train(step, set_lr, train_data, args, "torch ")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cyburn.gpt2", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="training steps (600)")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step (16)")
    parser.add_argument("--context", type=int, default=64, help="bytes per sequence (64)")
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks (4)")
    parser.add_argument("--embd", type=int, default=128, help="embedding width (128)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (4)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (3e-3)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="AdamW's (0.01)")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and batches (0)")
    parser.add_argument("--sample", type=int, default=300, help="bytes to generate (300)")
    parser.add_argument("--threads", type=int, default=None, help="cyburn's (and torch's) threads")
    parser.add_argument("--compare", action="store_true",
                        help="also run the same steps in PyTorch and print both step times")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "context", "layers", "embd", "heads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.embd % args.heads:
        parser.error(f"--embd {args.embd} must be a multiple of --heads {args.heads}")
    if args.compare:
        try:
            import torch  # noqa: F401
        except ImportError:
            parser.error("--compare needs PyTorch, which is not installed")
    if args.threads:
        cb.set_num_threads(args.threads)

    data = np.frombuffer(standard_library_text(), np.uint8)
    split = int(len(data) * (1 - HELD_OUT))
    train_data, held_out = data[:split], data[split:]
    config = GPT2Config(vocab_size=256, n_positions=args.context, n_embd=args.embd,
                        n_layer=args.layers, n_head=args.heads)
    model = GPT2(config, seed=args.seed)
    initial = {name: p.copy() for name, p in model.params.items()} if args.compare else None
    count = sum(p.size for p in model.params.values())
    print(f"GPT-2 of {count / 1e6:.2f}M parameters ({args.layers} layers, {args.embd} wide, "
          f"{args.heads} heads), {args.batch} x {args.context} bytes per step, on "
          f"{len(train_data) / 1e6:.1f} MB of the standard library; cyburn on "
          f"{cb.get_num_threads()} thread{'s' if cb.get_num_threads() > 1 else ''}")
    optimizer = AdamW(model.params, lr=args.lr, weight_decay=args.weight_decay)

    def step(x, y):
        loss, grads = model.loss_and_grads(x, y)
        optimizer.step(grads)
        return loss

    def set_lr(lr):
        optimizer.lr = lr

    losses, seconds, total = train(step, set_lr, train_data, args, "cyburn")
    tokens = args.batch * args.context
    print(f"cyburn: loss {np.mean(losses[:5]):.3f} -> {np.mean(losses[-20:]):.3f} "
          f"(held out: {held_out_loss(model, held_out, args):.3f}) in {total:.1f} s, "
          f"{seconds * 1e3:.1f} ms per step (median), {tokens / seconds:,.0f} tokens/s")
    if args.compare:
        torch_losses, torch_seconds, torch_total = run_torch(initial, config, train_data, args)
        print(f"torch:  loss {np.mean(torch_losses[:5]):.3f} -> "
              f"{np.mean(torch_losses[-20:]):.3f} in {torch_total:.1f} s, "
              f"{torch_seconds * 1e3:.1f} ms per step (median), "
              f"{tokens / torch_seconds:,.0f} tokens/s; cyburn's step takes "
              f"{seconds / torch_seconds:.2f}x torch's time")
    print()
    print(sample_text(model, b"def ", args.sample, np.random.default_rng(args.seed)))


def sample_text(model, prompt, length, rng):
    """prompt followed by `length` sampled bytes (temperature 0.8, top 40). The model knows
    n_positions positions only: past them, each new stretch is generated after the last
    half-context of what came before."""
    tokens = np.frombuffer(prompt, np.uint8).astype(np.int64)
    keep = model.config.n_positions // 2
    while length > 0:
        start = max(0, len(tokens) - keep)
        new = min(length, model.config.n_positions - (len(tokens) - start))
        out = model.generate(tokens[None, start:], new, temperature=0.8, top_k=40, rng=rng)
        tokens = np.concatenate([tokens, out[0, len(tokens) - start:]])
        length -= new
    return bytes(tokens.astype(np.uint8)).decode("utf-8", errors="replace")

if __name__ == "__main__":
    main()
