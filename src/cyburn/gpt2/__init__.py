"""GPT-2 in NumPy on cyburn's kernels: GPT2Config, GPT2 (Hugging Face parameter names and
layouts, from_state_dict, from_safetensors, forward, loss_and_grads, generate) and AdamW.

    python -m cyburn.gpt2      # train a small byte-level GPT-2 for a minute, then sample
"""
from .model import GPT2, GPT2Config
from .optim import AdamW

__all__ = ["GPT2Config", "GPT2", "AdamW"]
