"""The networks of the method, and nothing of its sequence: encode, UNet step, decode.

:class:`DepthModel` wraps the stock diffusers components of a checkpoint (a hub id or a local
folder in the diffusers layout) on one device in one dtype. It knows how to turn a frame into
the model's input, images into latents, snippets of latents into depth maps (the denoising loop
over batched UNet calls and the VAE decode), and depth back into latents. Which snippets run,
in what order, and what happens to their maps is :mod:`.method`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .attention import enable_cross_frame_attention
from .checkpoint import Components, load_components
from .config import DEFAULT_CHECKPOINT, InferenceConfig
from .device import TORCH_DTYPES, resolve_device, resolve_dtype
from .errors import ConfigError, InputError
from .progress import ProgressCallback, report

VAE_FACTOR = 8
# Rough UNet activation memory per latent pixel of one frame in half precision (SD2 size, SDPA);
# only used to pick an automatic batch size on CUDA.
UNET_BYTES_PER_LATENT_PIXEL = 160 * 1024


def processing_size(height: int, width: int, res: int) -> tuple[int, int]:
    """The reference resize rule: the longer edge becomes ``res`` (0 keeps the size).

    The shorter edge keeps at least 1 px (a 96x1 plate at ``res`` 64 is 64x1, where the
    reference's rule gives 0 px and fails)."""
    if res <= 0:
        return height, width
    factor = min(res / width, res / height)
    return max(1, int(height * factor)), max(1, int(width * factor))


# Smallest processing size (px, each way): the co-alignment crops a 2-pixel border
# (`alignment.align`'s ``border``) and needs a pixel left.
MIN_PROCESSING_PX = 5


def check_processing_size(height: int, width: int, res: int) -> tuple[int, int]:
    """`processing_size`, or a ConfigError naming the ``--res`` that a very thin plate needs."""
    size = processing_size(height, width, res)
    if min(size) >= MIN_PROCESSING_PX:
        return size
    need = math.ceil(MIN_PROCESSING_PX * max(height, width) / min(height, width))
    raise ConfigError(
        f"a {width}x{height} plate at `--res {res}` is processed at {size[1]}x{size[0]}; the "
        f"alignment needs at least {MIN_PROCESSING_PX} px each way: use `--res {need}` or more"
    )


def pad_to_multiple(x: torch.Tensor, multiple: int = VAE_FACTOR) -> torch.Tensor:
    """Replicate-pad the bottom/right edges of ``[B,C,H,W]`` up to multiples of ``multiple``."""
    pad_h = -x.shape[-2] % multiple
    pad_w = -x.shape[-1] % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


class SubPixelUpsample(torch.nn.Module):
    """A VAE decoder's ``Upsample2D`` (nearest 2x, then a 3x3 convolution), computed at the
    low resolution.

    Each of the four output phases (even/odd row, even/odd column) of a 3x3 convolution of a
    nearest-upsampled image sees only a 2x2 neighbourhood of the input, with the 3x3 taps
    summed in pairs. So one 2x2 convolution with the four phases' kernels stacked on the
    output axis, then an interleave, gives the same values with 16 instead of 36
    multiply-adds per input pixel and channel pair (zero padding maps to zero padding). Same
    values up to float rounding (a different summation order).
    """

    # rows (or columns) of the 3x3 kernel each phase's 2 taps sum, for phase 0 and phase 1
    TAPS = torch.tensor([[[1.0, 0, 0], [0, 1, 1]], [[1.0, 1, 0], [0, 0, 1]]])

    def __init__(self, upsample: torch.nn.Module):
        super().__init__()
        self.upsample = upsample  # kept, so the weights and their names stay the VAE's
        w = upsample.conv.weight  # [O,I,3,3]
        taps = self.TAPS.to(w.device)
        # summed in float32 whatever the weights' dtype, then rounded once
        kernels = [
            torch.einsum("rk,oikl,cl->oirc", taps[a], w.float(), taps[b])
            for a in (0, 1)
            for b in (0, 1)
        ]
        kernel = torch.cat(kernels).to(w.dtype).contiguous(memory_format=torch.channels_last)
        self.register_buffer("kernel", kernel, persistent=False)

    @staticmethod
    def applies_to(module: torch.nn.Module) -> bool:
        return (
            getattr(module, "interpolate", False)
            and getattr(module, "use_conv", False)
            and not module.use_conv_transpose
            and module.norm is None
            and tuple(module.conv.kernel_size) == (3, 3)
            and tuple(module.conv.padding) == (1, 1)
            and module.conv.bias is not None
        )

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None:  # an odd target size: the stock path
            return self.upsample(x, output_size)
        batch, _, height, width = x.shape
        out_ch = self.kernel.shape[0] // 4
        phases = F.conv2d(F.pad(x, (1, 1, 1, 1)), self.kernel)  # [B,4O,H+1,W+1]
        phases = phases.view(batch, 2, 2, out_ch, height + 1, width + 1)
        out = torch.empty(
            (batch, out_ch, 2 * height, 2 * width),
            dtype=x.dtype,
            device=x.device,
            memory_format=torch.channels_last,
        )
        grid = out.view(batch, out_ch, height, 2, width, 2)
        for a in (0, 1):
            for b in (0, 1):
                grid[:, :, :, a, :, b] = phases[:, a, b, :, a : a + height, b : b + width]
        return out.add_(self.upsample.conv.bias[:, None, None])


class DepthModel:
    """The networks on one device in one dtype.

    ``reference=True`` keeps the reference's memory layout (contiguous NCHW, nothing
    compiled), so ``--reference`` runs the same kernels the reference runs. Otherwise the UNet
    and the VAE run channels-last, the decoder's upsamplers run as :class:`SubPixelUpsample`
    on the CPU (both measured by ``benchmarks/speed_bench.py components``), and
    ``compile=True`` wraps the encoder, decoder and UNet in :func:`torch.compile` (each new
    input shape compiles once, which costs tens of seconds: for long runs only).
    """

    def __init__(
        self,
        components: Components,
        device: torch.device,
        dtype: str,
        reference: bool = False,
        compile: bool = False,
    ):
        if reference and compile:
            raise ConfigError("`--reference` runs the reference's kernels; it cannot `--compile`")
        self.components = components
        self.device = device
        self.dtype_name = dtype
        self.dtype = TORCH_DTYPES[dtype]
        self._empty_embedding: torch.Tensor | None = None
        # the VAE's latent scale comes from its config (0.18215 for Stable Diffusion 2)
        self.latent_scale = float(components.vae.config.scaling_factor)
        vae = components.vae
        if reference:
            # the reference's attention layout: cross-attention too on the snippet's frames
            # joined into one token sequence (same maths, its rounding; docs/method.md)
            enable_cross_frame_attention(components.unet, join_cross_attention=True)
        self.channels_last = not reference
        self._encoder, self._decoder, self._unet = vae.encoder, vae.decoder, components.unet
        if self.channels_last:
            for module in (vae.encoder, vae.quant_conv, vae.post_quant_conv, vae.decoder):
                module.to(memory_format=torch.channels_last)
            components.unet.to(memory_format=torch.channels_last)
            if device.type == "cpu":  # measured on the CPU only (benchmarks/speed_bench.py)
                for block in vae.decoder.up_blocks:
                    for i, up in enumerate(block.upsamplers or []):
                        if SubPixelUpsample.applies_to(up):
                            block.upsamplers[i] = SubPixelUpsample(up)
        if compile:
            self._encoder = torch.compile(vae.encoder)
            self._decoder = torch.compile(vae.decoder)
            self._unet = torch.compile(components.unet)

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str = DEFAULT_CHECKPOINT,
        device: str = "auto",
        dtype: str = "fp32",
        dtype_explicit: bool = True,
        reference: bool = False,
        compile: bool = False,
    ) -> DepthModel:
        torch_device = resolve_device(device)
        dtype = resolve_dtype(dtype, torch_device, explicit=dtype_explicit)
        components = load_components(checkpoint, torch_device, TORCH_DTYPES[dtype])
        return cls(components, torch_device, dtype, reference=reference, compile=compile)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the networks' memory layout (a no-op in reference mode)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def preprocess(self, frame: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """RGB ``[H,W,3]`` in [0,1] → ``[1,3,h8,w8]`` in [-1,1] at the processing size, padded."""
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"expected an RGB frame [H,W,3]; got shape {tuple(frame.shape)}")
        x = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))
        # resize on 0..255 values, as the reference does: 8-bit plates then give bit-identical
        # model input (k/255*255 == k in float32), which its fragile Adam solver needs
        x = x.permute(2, 0, 1)[None] * 255.0  # [1,3,H,W]
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x / 255.0 * 2.0 - 1.0
        return pad_to_multiple(x)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,h8,w8]`` in [-1,1] → latents ``[B,4,h8/8,w8/8]`` (moments' mean, scaled)."""
        vae = self.components.vae
        moments = vae.quant_conv(self._encoder(self._layout(images.to(self.device, self.dtype))))
        mean, _ = torch.chunk(moments, 2, dim=1)
        return mean * self.latent_scale

    @torch.no_grad()
    def decode_depth(self, latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Latents ``[B,4,h,w]`` → depth ``[B,H,W]`` (mean of the 3 decoded channels, cropped)."""
        vae = self.components.vae
        latents = self._layout(latents / self.latent_scale)
        decoded = self._decoder(vae.post_quant_conv(latents))  # [B,3,h8,w8]
        return decoded.mean(dim=1)[:, : size[0], : size[1]]

    @torch.no_grad()
    def empty_embedding(self) -> torch.Tensor:
        """CLIP embedding of the empty prompt, tokenised without padding: ``[1,2,C]``."""
        if self._empty_embedding is None:
            tokenizer = self.components.tokenizer
            ids = tokenizer(
                "",
                padding="do_not_pad",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            self._empty_embedding = self.components.text_encoder(ids)[0].to(self.dtype)
        return self._empty_embedding

    def shared_noise(self, latent_shape: tuple[int, int], seed: int) -> torch.Tensor:
        """The one noise latent ``[1,4,h,w]`` all frames share, drawn as the reference draws it."""
        generator = torch.Generator(self.device).manual_seed(seed)
        return torch.randn(
            (1, 4, *latent_shape), generator=generator, dtype=self.dtype, device=self.device
        )

    def auto_batch_size(self, latent_shape: tuple[int, int], snippet_len: int) -> int:
        """Snippets per UNet call: as many as fit in about half the free GPU memory."""
        if self.device.type != "cuda":
            return 2
        free, _ = torch.cuda.mem_get_info(self.device)
        per_frame = latent_shape[0] * latent_shape[1] * UNET_BYTES_PER_LATENT_PIXEL
        per_frame *= 2 if self.dtype == torch.float32 else 1
        return int(min(32, max(1, 0.5 * free // (per_frame * snippet_len))))

    @torch.no_grad()
    def unet_step(
        self,
        scheduler,
        rgb_latents: torch.Tensor,
        depth_latents: torch.Tensor,
        t: torch.Tensor,
        snippet_len: int,
    ) -> torch.Tensor:
        """One denoising step for snippets stacked on the batch axis: ``[(b L),4,h,w]``."""
        batch = rgb_latents.shape[0]
        unet_input = self._layout(torch.cat([rgb_latents, depth_latents], dim=1))  # [(b L),8,h,w]
        embedding = self.empty_embedding().repeat(batch, 1, 1)
        noise_pred = self._unet(
            unet_input,
            t.repeat(batch),
            encoder_hidden_states=embedding,
            cross_attention_kwargs={"num_frames": snippet_len},
        ).sample  # [(b L),4,h,w]
        return scheduler.step(noise_pred, t, depth_latents).prev_sample

    def new_scheduler(self):
        return type(self.components.scheduler).from_config(self.components.scheduler.config)

    @torch.no_grad()
    def predict_snippets(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        indices: np.ndarray,
        size: tuple[int, int],
        config: InferenceConfig,
        batch_size: int,
        progress: ProgressCallback | None = None,
        done_before: int = 0,
        total: int | None = None,
    ) -> np.ndarray:
        """Denoise and decode snippets ``indices`` ``[n, L]`` (rows of ``latents``) in UNet
        calls of ``batch_size`` snippets: ``[n, L, H, W]`` (float32, or float16 for half
        precision)."""
        n_snippets, snippet_len = indices.shape
        out_dtype = np.float32 if self.dtype == torch.float32 else np.float16
        out = np.empty((n_snippets, snippet_len, *size), dtype=out_dtype)
        scheduler = self.new_scheduler()
        total = total or n_snippets
        flat_out = out.reshape(-1, *size)  # [(n L),H,W] view
        # denoised latents wait here until a full VAE batch is ready: decoding then runs over
        # the flattened snippet frames in fixed chunks, whatever the UNet batch size
        pending: list[torch.Tensor] = []
        decoded = 0

        def decode_ready(final: bool) -> None:
            nonlocal decoded
            queue = torch.cat(pending) if pending else None
            pending.clear()
            if queue is None:
                return
            while len(queue) >= config.vae_batch_size or (final and len(queue)):
                chunk, queue = queue[: config.vae_batch_size], queue[config.vae_batch_size :]
                maps = self.decode_depth(chunk, size).float().cpu().numpy()
                flat_out[decoded : decoded + len(maps)] = maps
                decoded += len(maps)
            if len(queue):
                pending.append(queue)

        for start in range(0, n_snippets, batch_size):
            batch_idx = torch.from_numpy(indices[start : start + batch_size].reshape(-1))
            rgb = latents[batch_idx.to(latents.device)]  # [(b L),4,h,w]
            depth = noise.repeat(rgb.shape[0], 1, 1, 1)
            scheduler.set_timesteps(config.denoise_steps, device=self.device)
            for t in scheduler.timesteps:
                depth = self.unet_step(scheduler, rgb, depth, t, snippet_len)
            pending.append(depth)
            final = start + batch_size >= n_snippets
            decode_ready(final)
            if not final:  # the caller reports the last batch once the maps are stored
                report(progress, "snippets", done_before + start + batch_size, total)
        return out

    @torch.no_grad()
    def encode_depth(self, chunks: Iterable[np.ndarray]) -> torch.Tensor:
        """Aligned depth in chunks of ``[b,H,W]`` (replicated to RGB) → latents ``[N,4,h,w]``."""
        depth_latents = []
        for chunk in chunks:
            chunk = torch.from_numpy(np.ascontiguousarray(chunk))
            images = pad_to_multiple(chunk[:, None].expand(-1, 3, -1, -1).float())
            depth_latents.append(self.encode(images))
        return torch.cat(depth_latents)
