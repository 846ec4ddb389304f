"""Multi-scale residual vector quantizer: one shared codebook, K token maps, φ convs between them.

For scale k (coarse to fine): area-downsample the remaining residual to h_k×w_k, look up the nearest code per
position, bicubic-upsample the code embeddings back to the finest grid, refine them with φ_k and subtract them from
the residual. The sum of the refined embeddings, f̂, approximates the latent; later scales only carry what earlier
ones missed. Letters: B batch, C = Cvae latent channels, V vocabulary, h/w one scale's grid, H/W the finest grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nextscale.scales import ScaleSchedule


class Phi(nn.Module):
    """φ: h ↦ (1-r)·h + r·conv3×3(h), a light refinement of an upsampled code map."""

    def __init__(self, channels: int, residual_ratio: float):
        super().__init__()
        self.residual_ratio = abs(residual_ratio)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        r = self.residual_ratio
        return h_BChw.mul(1 - r) + self.conv(h_BChw).mul_(r)


def upsample(h_BChw: torch.Tensor, side: int) -> torch.Tensor:
    return F.interpolate(h_BChw, size=(side, side), mode="bicubic", align_corners=False)


def downsample(f_BCHW: torch.Tensor, side: int) -> torch.Tensor:
    return F.interpolate(f_BCHW, size=(side, side), mode="area")


class MultiScaleQuantizer(nn.Module):
    """One codebook shared by K scales, and the φ convs that refine each scale's upsampled code map.

    `quantize` turns a latent (B, C, H, W) into K token maps and the cumulative f̂ after each; `forward` is the
    training pass (straight-through f̂ and the VQ loss); `fhat_from_tokens`, `teacher_input` and `next_input`
    rebuild f̂ from tokens for decoding, teacher forcing and sampling. Every path adds scale k as `refine(k, h)`.
    It holds no encoder or decoder and no usage statistics (training tracks those).
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        latent_channels: int,
        schedule: ScaleSchedule,
        num_phis: int = 4,
        phi_residual_ratio: float = 0.5,
        beta: float = 0.25,
        use_znorm: bool = False,
    ):
        """`num_phis`: 0 → one φ per scale (non-shared), 1 → a single shared φ, n → n partially shared φ.
        A `phi_residual_ratio` of 0 turns every φ into the identity."""
        super().__init__()
        self.vocab_size = vocab_size
        self.latent_channels = latent_channels
        self.schedule = schedule
        self.beta = beta
        self.use_znorm = use_znorm
        count = num_phis or schedule.num_scales
        self.codebook = nn.Embedding(vocab_size, latent_channels)
        if abs(phi_residual_ratio) > 1e-6:
            self.phis = nn.ModuleList(Phi(latent_channels, phi_residual_ratio) for _ in range(count))
        else:
            self.phis = nn.ModuleList(nn.Identity() for _ in range(count))
        self.phi_of_scale = schedule.phi_indices(count)

    def refine(self, scale: int, h_BChw: torch.Tensor) -> torch.Tensor:
        """Scale `scale`'s code embeddings (B, C, h, w) → their contribution to f̂ on the finest grid (B, C, H, W):
        bicubic upsampling (none at the finest scale), then that scale's φ."""
        K, final = self.schedule.num_scales, self.schedule.final_side
        h_BCHW = upsample(h_BChw, final) if scale < K - 1 else h_BChw.contiguous()
        return self.phis[self.phi_of_scale[scale]](h_BCHW)

    def nearest_codes(self, z_NC: torch.Tensor) -> torch.Tensor:
        """(N, C) vectors → (N,) code ids (squared L2, or cosine when `use_znorm`)."""
        codebook_VC = self.codebook.weight.detach()
        if self.use_znorm:
            return torch.argmax(F.normalize(z_NC, dim=-1) @ F.normalize(codebook_VC.T, dim=0), dim=1)
        distance_NV = z_NC.square().sum(dim=1, keepdim=True) + codebook_VC.square().sum(dim=1)
        distance_NV.addmm_(z_NC, codebook_VC.T, alpha=-2, beta=1)  # ||z||² + ||e||² − 2 z·e, as the official code
        return torch.argmin(distance_NV, dim=1)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, h, w) code ids, or (B, h·w) for a square map, → (B, C, h, w) embeddings."""
        if idx.dim() == 2:
            side = round(idx.shape[1] ** 0.5)
            idx = idx.view(idx.shape[0], side, side)
        return self.codebook(idx.long()).permute(0, 3, 1, 2)

    def _residual_loop(self, f_BCHW: torch.Tensor, keep_grad: bool):
        """Yield (scale, idx_Bhw, refined embedding on the finest grid, the residual that was quantised) while
        subtracting from the residual."""
        K, final = self.schedule.num_scales, self.schedule.final_side
        if f_BCHW.shape[-2:] != (final, final):
            raise ValueError(
                f"latent grid {tuple(f_BCHW.shape[-2:])} does not match the schedule's final scale {final}×{final}"
            )
        B, C = f_BCHW.shape[:2]
        f_rest = f_BCHW.detach().clone()
        for k, side in enumerate(self.schedule.patch_nums):
            z_BChw = downsample(f_rest, side) if k < K - 1 else f_rest
            idx_N = self.nearest_codes(z_BChw.permute(0, 2, 3, 1).reshape(-1, C).detach())
            idx_Bhw = idx_N.view(B, side, side)
            h_BChw = self.embed(idx_Bhw)
            if not keep_grad:
                h_BChw = h_BChw.detach()
            h_BCHW = self.refine(k, h_BChw)
            f_rest.sub_(h_BCHW.detach())
            yield k, idx_Bhw, h_BCHW, z_BChw

    @torch.no_grad()
    def quantize(self, f_BCHW: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Latent → (K token maps (B, h_k, w_k), K cumulative f̂ (B, C, H, W) after each scale)."""
        f_BCHW = f_BCHW.float()
        idx_list, fhat_list = [], []
        f_hat = torch.zeros_like(f_BCHW)
        for _, idx_Bhw, h_BCHW, _ in self._residual_loop(f_BCHW, keep_grad=False):
            f_hat.add_(h_BCHW)
            idx_list.append(idx_Bhw)
            fhat_list.append(f_hat.clone())
        return idx_list, fhat_list

    def forward(self, f_BCHW: torch.Tensor):
        """Training: (straight-through f̂, VQ loss, token maps, the residuals each scale quantised (B, C, h, w)).

        Per scale the loss adds β·MSE(sg[f̂], f) (commitment, moves the encoder) and MSE(f̂, sg[f]) (moves the
        codebook and φ), averaged over scales. Runs in fp32 regardless of autocast."""
        with torch.autocast(device_type=f_BCHW.device.type, enabled=False):
            f_BCHW = f_BCHW.float()
            f_detached = f_BCHW.detach()
            f_hat = torch.zeros_like(f_detached)
            loss = f_BCHW.new_zeros(())
            idx_list, residuals = [], []
            for _, idx_Bhw, h_BCHW, z_BChw in self._residual_loop(f_BCHW, keep_grad=True):
                f_hat = f_hat + h_BCHW
                loss = loss + self.beta * F.mse_loss(f_hat.detach(), f_BCHW) + F.mse_loss(f_hat, f_detached)
                idx_list.append(idx_Bhw)
                residuals.append(z_BChw.detach())
            loss = loss / self.schedule.num_scales
            f_hat_st = (f_hat.detach() - f_detached) + f_BCHW  # straight-through: value of f̂, gradient of f
        return f_hat_st, loss, idx_list, residuals

    def fhat_from_tokens(self, idx_list: list[torch.Tensor]) -> list[torch.Tensor]:
        """Token maps of the first k ≤ K scales → cumulative f̂ (B, C, H, W) after each of them."""
        return self.fhat_from_embeddings([self.embed(idx) for idx in idx_list])

    def fhat_from_embeddings(self, h_list: list[torch.Tensor]) -> list[torch.Tensor]:
        K = self.schedule.num_scales
        if len(h_list) > K:
            raise ValueError(f"got {len(h_list)} token maps for a {K}-scale schedule")
        out = []
        f_hat = None
        for k, h_BChw in enumerate(h_list):
            side = self.schedule.patch_nums[k]
            if tuple(h_BChw.shape[-2:]) != (side, side):
                raise ValueError(f"scale {k} must be {side}×{side}, got {tuple(h_BChw.shape[-2:])}")
            h_BCHW = self.refine(k, h_BChw.float())
            if f_hat is None:
                # start from a contiguous zero map as the official code does: the embeddings arrive channels-last,
                # and a channels-last f̂ would send the decoder down other conv kernels (~1e-4 off the reference)
                f_hat = torch.zeros_like(h_BCHW, memory_format=torch.contiguous_format)
            f_hat = f_hat + h_BCHW
            out.append(f_hat)
        return out

    def teacher_input(self, idx_list: list[torch.Tensor], num_scales: int | None = None) -> torch.Tensor:
        """Transformer input for teacher forcing: (B, L − first_l, C).

        The input at scale k ≥ 1 is the f̂ accumulated from scales < k, area-resized to scale k's grid, flattened
        row-major. With `num_scales` < K only the inputs of scales 1 … num_scales-1 are built (progressive training)."""
        K, final = self.schedule.num_scales, self.schedule.final_side
        num_scales = K if num_scales is None else num_scales
        B = idx_list[0].shape[0]
        f_hat = torch.zeros(B, self.latent_channels, final, final, device=idx_list[0].device)
        chunks = []
        for k in range(num_scales - 1):
            f_hat.add_(self.refine(k, self.embed(idx_list[k])))
            nxt = self.schedule.patch_nums[k + 1]
            chunks.append(downsample(f_hat, nxt).flatten(2).transpose(1, 2))
        if not chunks:
            return f_hat.new_zeros(B, 0, self.latent_channels)
        return torch.cat(chunks, dim=1)

    def next_input(self, scale: int, f_hat_BCHW: torch.Tensor, h_BChw: torch.Tensor) -> torch.Tensor:
        """Sampling step: add scale `scale`'s embeddings to f̂ in place, return the next scale's input (B, C, h', w')
        (f̂ itself after the last scale)."""
        f_hat_BCHW.add_(self.refine(scale, h_BChw))
        if scale < self.schedule.num_scales - 1:
            return downsample(f_hat_BCHW, self.schedule.patch_nums[scale + 1])
        return f_hat_BCHW
