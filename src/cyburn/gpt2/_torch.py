"""The same GPT-2 in PyTorch, written the way PyTorch users write it (nn.Linear,
F.scaled_dot_product_attention, F.gelu(approximate="tanh"), F.cross_entropy, the LM head
tied to wte), built from a cyburn.gpt2 model's parameters: the peer that the demo's --compare
and the gpt2 benchmark time cyburn against. Needs torch (imported when called)."""
import numpy as np


def torch_gpt2(params, config):
    """An nn.Module holding copies of `params` (Hugging Face names; Conv1D weights, stored
    input by output, become nn.Linear weights, output by input), in their dtype."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    C, H, eps = config.n_embd, config.n_head, config.layer_norm_epsilon

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(C, 3 * C)
            self.c_proj = nn.Linear(C, C)

        def forward(self, x, cache=None):
            B, T, _ = x.shape
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2)
                       for t in self.c_attn(x).split(C, dim=2))
            if cache is not None:                   # (keys, values) of the earlier positions
                if cache:
                    k = torch.cat([cache[0], k], dim=2)
                    v = torch.cat([cache[1], v], dim=2)
                cache[:] = [k, v]
            # one new query attends to every cached key; a whole prompt, causally
            y = F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1)
            return self.c_proj(y.transpose(1, 2).reshape(B, T, C))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(C, eps=eps)
            self.attn = Attention()
            self.ln_2 = nn.LayerNorm(C, eps=eps)
            self.mlp = nn.ModuleDict({"c_fc": nn.Linear(C, 4 * C), "c_proj": nn.Linear(4 * C, C)})

        def forward(self, x, cache=None):
            x = x + self.attn(self.ln_1(x), cache)
            return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict({
                "wte": nn.Embedding(config.vocab_size, C),
                "wpe": nn.Embedding(config.n_positions, C),
                "h": nn.ModuleList(Block() for _ in range(config.n_layer)),
                "ln_f": nn.LayerNorm(C, eps=eps)})

        def forward(self, idx, targets=None, caches=None, start=0):
            """Mean cross-entropy against targets (-100 ignored), else the logits."""
            t = self.transformer
            positions = torch.arange(start, start + idx.shape[1])
            x = t.wte(idx) + t.wpe(positions)
            for i, block in enumerate(t.h):
                x = block(x, None if caches is None else caches[i])
            x = t.ln_f(x)
            if targets is None:
                return F.linear(x, t.wte.weight)
            logits = F.linear(x, t.wte.weight)
            return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=-100)

        @torch.no_grad()
        def generate_greedy(self, idx, max_new_tokens):
            """idx followed by max_new_tokens greedy tokens, each step on the new token with
            a key/value cache."""
            caches = [[] for _ in range(config.n_layer)]
            tokens = [idx]
            logits = self(idx, caches=caches)
            for step in range(max_new_tokens):
                nxt = logits[:, -1].argmax(dim=-1, keepdim=True)
                tokens.append(nxt)
                if step + 1 < max_new_tokens:
                    logits = self(nxt, caches=caches, start=idx.shape[1] + step)
            return torch.cat(tokens, dim=1)

    model = GPT()
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[
        params["transformer.wte.weight"].dtype]
    model.to(dtype)
    state = {}
    for name, array in params.items():
        tensor = torch.from_numpy(np.array(array))
        is_conv1d = array.ndim == 2 and ".h." in name       # (in, out) -> nn.Linear's (out, in)
        state[name] = tensor.T.contiguous() if is_conv1d else tensor
    model.load_state_dict(state)
    return model
