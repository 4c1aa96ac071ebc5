"""Causal audio-to-motion transformer (one network, explicit streaming state).

Log-mel frames (10 ms) are stacked in pairs into 20 ms tokens, passed through two causal
convolutions and a stack of pre-LN transformer blocks with sliding-window causal attention
(each token sees itself and the ``window - 1`` tokens before it, so the receptive field of the
stack is ``n_layers * (window - 1)`` tokens plus the convolutions) and a learned
relative-position bias per head. Token ``n`` predicts the face at time
``(n + 1) * token_s - lookahead_s``: the model hears
``lookahead_s`` of audio beyond the instant it animates (anticipation of closures and rounding).

Streaming state goes in and out of :meth:`MotionTransformer.forward` as named tensors:

- ``conv1_state`` (B, k-1, 2*n_mels), ``conv2_state`` (B, k-1, d): convolution tails
- ``k_cache``/``v_cache`` (n_layers, B, n_heads, window-1, d_head): past keys and values
- ``cache_valid`` (B, window-1): 1 where the cache slot holds a real past token

A fresh stream starts from :meth:`initial_state` (zeros). Running a clip in one call or in chunks
of any number of tokens gives the same outputs (tested), so torch, ONNX and TensorRT share one
signature. Offline processing of long audio goes through the same chunked path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avatar.motion.channels import OUTPUT_NAMES, STATE_NAMES  # noqa: F401 - re-exported


@dataclass(frozen=True)
class MotionDims:
    """Hyper-parameters; saved inside every checkpoint (``ckpt["dims"]``)."""

    n_mels: int = 80
    frames_per_token: int = 2  # 10 ms mel frames per token
    d_model: int = 144
    n_heads: int = 4
    n_layers: int = 4
    d_ff: int = 432
    window: int = 100  # attention span in tokens, current one included (2 s)
    conv_kernel: int = 3
    n_blendshapes: int = 16
    n_visemes: int = 15
    lookahead_tokens: int = 3  # 60 ms at 20 ms tokens
    dropout: float = 0.0  # training only (residual branches); a no-op at inference and export

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def past(self) -> int:
        return self.window - 1


class CausalConv(nn.Module):
    """Conv1d over time whose left context comes from an explicit state."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(c_in, c_out, kernel)

    def forward(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        # x (B, T, C_in), state (B, k-1, C_in)
        full = torch.cat([state, x], dim=1)  # (B, k-1+T, C_in)
        y = self.conv(full.transpose(1, 2)).transpose(1, 2)  # (B, T, C_out)
        return y, full[:, full.shape[1] - (self.kernel - 1) :]


class Block(nn.Module):
    """Pre-LN transformer block with cached sliding-window attention."""

    def __init__(self, dims: MotionDims) -> None:
        super().__init__()
        self.dims = dims
        self.ln1 = nn.LayerNorm(dims.d_model)
        self.qkv = nn.Linear(dims.d_model, 3 * dims.d_model)
        self.proj = nn.Linear(dims.d_model, dims.d_model)
        self.ln2 = nn.LayerNorm(dims.d_model)
        self.ff = nn.Sequential(
            nn.Linear(dims.d_model, dims.d_ff), nn.GELU(), nn.Linear(dims.d_ff, dims.d_model)
        )
        self.drop = nn.Dropout(dims.dropout)

    def forward(
        self, x: Tensor, k_past: Tensor, v_past: Tensor, bias: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        # x (B, T, d); k_past/v_past (B, H, P, dh); bias (B or 1, H, T, P+T)
        b, t, d = x.shape
        h, dh = self.dims.n_heads, self.dims.d_head
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q = q.reshape(b, t, h, dh).transpose(1, 2)  # (B, H, T, dh)
        k = torch.cat([k_past, k.reshape(b, t, h, dh).transpose(1, 2)], dim=2)  # (B, H, P+T, dh)
        v = torch.cat([v_past, v.reshape(b, t, h, dh).transpose(1, 2)], dim=2)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(dh)) + bias  # (B, H, T, P+T)
        y = att.softmax(dim=-1) @ v  # (B, H, T, dh)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))
        x = x + self.drop(self.ff(self.ln2(x)))
        p = self.dims.past
        return x, k[:, :, k.shape[2] - p :], v[:, :, v.shape[2] - p :]


class MotionTransformer(nn.Module):
    """Mel frames -> blendshapes (sigmoid) and viseme probabilities, per 20 ms token."""

    def __init__(self, dims: MotionDims) -> None:
        super().__init__()
        self.dims = dims
        c_in = dims.n_mels * dims.frames_per_token
        self.mel_mean: Tensor
        self.mel_std: Tensor
        self.register_buffer("mel_mean", torch.zeros(dims.n_mels))
        self.register_buffer("mel_std", torch.ones(dims.n_mels))
        self.conv1 = CausalConv(c_in, dims.d_model, dims.conv_kernel)
        self.conv2 = CausalConv(dims.d_model, dims.d_model, dims.conv_kernel)
        self.blocks = nn.ModuleList(Block(dims) for _ in range(dims.n_layers))
        self.rel_bias = nn.Parameter(torch.zeros(dims.n_heads, dims.window))
        self.ln_out = nn.LayerNorm(dims.d_model)
        self.head_bs = nn.Linear(dims.d_model, dims.n_blendshapes)
        self.head_vis = nn.Linear(dims.d_model, dims.n_visemes)

    def initial_state(self, batch: int = 1) -> dict[str, Tensor]:
        """State of a fresh stream: zeros everywhere, no valid cache slot."""
        d = self.dims
        c_in = d.n_mels * d.frames_per_token
        k = d.conv_kernel - 1
        cache = (d.n_layers, batch, d.n_heads, d.past, d.d_head)
        return {
            "conv1_state": torch.zeros(batch, k, c_in),
            "conv2_state": torch.zeros(batch, k, d.d_model),
            "k_cache": torch.zeros(cache),
            "v_cache": torch.zeros(cache),
            "cache_valid": torch.zeros(batch, d.past),
        }

    def _attention_bias(self, t: int, cache_valid: Tensor) -> Tensor:
        """Relative-position bias plus mask, (B, H, T, P+T); P is the cache length given."""
        p, w = cache_valid.shape[1], self.dims.window
        q_pos = torch.arange(t, device=cache_valid.device) + p  # (T,)
        k_pos = torch.arange(p + t, device=cache_valid.device)  # (P+T,)
        dist = q_pos[:, None] - k_pos[None, :]  # (T, P+T)
        in_window = (dist >= 0) & (dist < w)
        bias = self.rel_bias[:, dist.clamp(0, w - 1)]  # (H, T, P+T)
        valid = torch.cat([cache_valid, cache_valid.new_ones(cache_valid.shape[0], t)], 1)
        allowed = in_window[None, :, :] & (valid[:, None, :] > 0.5)  # (B, T, P+T)
        neg = torch.finfo(bias.dtype).min / 2
        return bias[None] + torch.where(allowed, 0.0, neg)[:, None]

    def trunk(self, mel: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """mel (B, T*frames_per_token, n_mels) -> features (B, T, d) and the new state."""
        d = self.dims
        b = mel.shape[0]
        x = (mel - self.mel_mean) / self.mel_std
        x = x.reshape(b, -1, d.n_mels * d.frames_per_token)  # (B, T, 2*n_mels)
        t = x.shape[1]
        x, conv1_new = self.conv1(x, state["conv1_state"])
        x = F.gelu(x)
        x, conv2_new = self.conv2(x, state["conv2_state"])
        x = F.gelu(x)  # (B, T, d)
        cache_valid = state["cache_valid"]
        bias = self._attention_bias(t, cache_valid)
        k_new, v_new = [], []
        for i, block in enumerate(self.blocks):
            x, k_i, v_i = block(x, state["k_cache"][i], state["v_cache"][i], bias)
            k_new.append(k_i)
            v_new.append(v_i)
        valid = torch.cat([cache_valid, cache_valid.new_ones(cache_valid.shape[0], t)], 1)
        new_state = {
            "conv1_state": conv1_new,
            "conv2_state": conv2_new,
            "k_cache": torch.stack(k_new),
            "v_cache": torch.stack(v_new),
            "cache_valid": valid[:, valid.shape[1] - d.past :],
        }
        return self.ln_out(x), new_state

    def forward(
        self,
        mel: Tensor,
        conv1_state: Tensor,
        conv2_state: Tensor,
        k_cache: Tensor,
        v_cache: Tensor,
        cache_valid: Tensor,
    ) -> tuple[Tensor, ...]:
        """mel (B, T*frames_per_token, n_mels) -> blendshapes (B, T, nb) in [0, 1], visemes
        (B, T, nv) probabilities, then the new state tensors in :data:`STATE_NAMES` order."""
        state = {
            "conv1_state": conv1_state,
            "conv2_state": conv2_state,
            "k_cache": k_cache,
            "v_cache": v_cache,
            "cache_valid": cache_valid,
        }
        x, new = self.trunk(mel, state)
        blendshapes = torch.sigmoid(self.head_bs(x))
        visemes = self.head_vis(x).softmax(dim=-1)
        return (blendshapes, visemes, *(new[n] for n in STATE_NAMES))

    def training_outputs(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        """Blendshapes (B, T, nb) and viseme logits (B, T, nv) from a fresh stream.

        Same result as :meth:`forward` from :meth:`initial_state`, but with an empty (length 0)
        cache instead of masked zeros: nothing is computed for slots that hold no token.
        """
        state = self.initial_state(mel.shape[0])
        for name in ("k_cache", "v_cache"):
            state[name] = state[name][:, :, :, :0]
        state["cache_valid"] = state["cache_valid"][:, :0]
        x, _ = self.trunk(mel, state)
        return torch.sigmoid(self.head_bs(x)), self.head_vis(x)

    def checkpoint(self, extra: dict[str, object] | None = None) -> dict[str, object]:
        """A self-describing checkpoint: dims, weights and any metadata."""
        return {"dims": asdict(self.dims), "state_dict": self.state_dict(), **(extra or {})}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, object]) -> MotionTransformer:
        dims = MotionDims(**ckpt["dims"])  # type: ignore[arg-type]
        model = cls(dims)
        model.load_state_dict(ckpt["state_dict"])  # type: ignore[arg-type]
        return model.eval()
