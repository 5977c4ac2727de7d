"""The RollingDepth pipeline: frames in, temporally consistent relative inverse depth out.

Stages (METHOD.md): 1 preprocess, 2 RGB latents once per frame, 3 empty-prompt embedding,
4 one shared noise latent, 5-6 dilated snippets denoised in batched UNet calls, 8 decode,
9 co-alignment and merge, 10 optional refinement. Frames stream in and are reduced to latents
at once, so the plate itself is never held in memory.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .alignment import AlignmentResult, coalign, normalize_depth
from .checkpoint import Components, load_components
from .config import DEFAULT_CHECKPOINT, InferenceConfig
from .device import TORCH_DTYPES, resolve_device, resolve_dtype
from .errors import ConfigError, InputError, RollingDepthError
from .progress import ProgressCallback, report
from .snippets import check_clip_length, refine_dilations, resolve_dilations, snippet_indices

LATENT_SCALE = 0.18215
VAE_FACTOR = 8
# Rough UNet activation memory per latent pixel of one frame in half precision (SD2 size, SDPA);
# only used to pick an automatic batch size on CUDA.
UNET_BYTES_PER_LATENT_PIXEL = 160 * 1024


@dataclass
class DepthPrediction:
    """What a run produced, kept so that alignment and output can be redone without the model."""

    depth: np.ndarray  # [N,H,W] float32 relative inverse depth (larger = nearer), about [-1,1]
    aligned: np.ndarray  # [N,H,W] float32 co-aligned, renormalised to [-1,1], before refinement
    alignment: AlignmentResult
    dilations: list[int]  # as run, after capping (duplicates kept)
    indices: list[np.ndarray]  # per dilation entry [n_snippets, L]
    snippets: list[np.ndarray]  # per dilation entry [n_snippets, L, H, W]
    processing_size: tuple[int, int]  # (H, W)
    config: InferenceConfig
    timings: dict[str, float] = field(default_factory=dict)


def check_frame_size(frame: np.ndarray, plate_size: tuple[int, int], count: int) -> None:
    """InputError unless frame number ``count`` (``[H,W,3]``) has the first frame's size."""
    if frame.shape[:2] != plate_size:
        raise InputError(
            f"frame {count} is {frame.shape[1]}x{frame.shape[0]}, the first frame "
            f"{plate_size[1]}x{plate_size[0]}: every frame must have one size"
        )


def processing_size(height: int, width: int, res: int) -> tuple[int, int]:
    """The reference resize rule: the longer edge becomes ``res`` (0 keeps the size)."""
    if res <= 0:
        return height, width
    factor = min(res / width, res / height)
    return int(height * factor), int(width * factor)


def pad_to_multiple(x: torch.Tensor, multiple: int = VAE_FACTOR) -> torch.Tensor:
    """Replicate-pad the bottom/right edges of ``[B,C,H,W]`` up to multiples of ``multiple``."""
    pad_h = -x.shape[-2] % multiple
    pad_w = -x.shape[-1] % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


class RollingDepthPipeline:
    def __init__(self, components: Components, device: torch.device, dtype: str):
        self.components = components
        self.device = device
        self.dtype_name = dtype
        self.dtype = TORCH_DTYPES[dtype]
        self._empty_embedding: torch.Tensor | None = None

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str = DEFAULT_CHECKPOINT,
        device: str = "auto",
        dtype: str = "fp32",
        dtype_explicit: bool = True,
    ) -> RollingDepthPipeline:
        torch_device = resolve_device(device)
        dtype = resolve_dtype(dtype, torch_device, explicit=dtype_explicit)
        components = load_components(checkpoint, torch_device, TORCH_DTYPES[dtype])
        return cls(components, torch_device, dtype)

    # ---------------------------------------------------------------- stages
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
        moments = vae.quant_conv(vae.encoder(images.to(self.device, self.dtype)))
        mean, _ = torch.chunk(moments, 2, dim=1)
        return mean * LATENT_SCALE

    @torch.no_grad()
    def decode_depth(self, latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Latents ``[B,4,h,w]`` → depth ``[B,H,W]`` (mean of the 3 decoded channels, cropped)."""
        vae = self.components.vae
        decoded = vae.decoder(vae.post_quant_conv(latents / LATENT_SCALE))  # [B,3,h8,w8]
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

    @torch.no_grad()
    def encode_frames(
        self,
        frames: Iterable[np.ndarray],
        config: InferenceConfig,
        n_frames: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Stream frames through the VAE encoder: latents ``[N,4,h,w]`` and the processing size."""
        latents: list[torch.Tensor] = []
        pending: list[torch.Tensor] = []
        size: tuple[int, int] | None = None
        plate_size: tuple[int, int] | None = None
        total = n_frames or 0
        count = 0

        def flush() -> None:
            latents.append(self.encode(torch.cat(pending)))
            pending.clear()
            report(progress, "encode", count, max(total, count))

        for frame in frames:
            if plate_size is None:
                plate_size = frame.shape[:2]
                size = processing_size(*plate_size, config.processing_res)
            check_frame_size(frame, plate_size, count)
            pending.append(self.preprocess(frame, size))
            count += 1
            if len(pending) == config.vae_batch_size:
                flush()
        if pending:
            flush()
        if size is None:
            raise InputError("the plate has no frames")
        return torch.cat(latents), size

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
        unet_input = torch.cat([rgb_latents, depth_latents], dim=1)  # [(b L),8,h,w]
        embedding = self.empty_embedding().repeat(batch, 1, 1)
        noise_pred = self.components.unet(
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
        progress: ProgressCallback | None = None,
        done_before: int = 0,
        total: int | None = None,
    ) -> np.ndarray:
        """Denoise and decode every snippet of one dilation: ``[n_snippets, L, H, W]``."""
        n_snippets, snippet_len = indices.shape
        batch_size = config.batch_size or self.auto_batch_size(latents.shape[-2:], snippet_len)
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
            decode_ready(final=start + batch_size >= n_snippets)
            report(progress, "snippets", done_before + min(start + batch_size, n_snippets), total)
        return out

    @torch.no_grad()
    def refine(
        self,
        latents: torch.Tensor,
        aligned: np.ndarray,
        noise: torch.Tensor,
        size: tuple[int, int],
        config: InferenceConfig,
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """Diffusion refinement of the aligned video with shrinking dilations: ``[N,H,W]``."""
        chunks = (
            aligned[start : start + config.vae_batch_size]
            for start in range(0, aligned.shape[0], config.vae_batch_size)
        )
        current = self.refine_latents(latents, self.encode_depth(chunks), noise, config, progress)
        maps = [self.decode_depth(chunk, size) for chunk in current.split(config.vae_batch_size)]
        return torch.cat(maps).float().cpu().numpy()

    @torch.no_grad()
    def encode_depth(self, chunks: Iterable[np.ndarray]) -> torch.Tensor:
        """Aligned depth in chunks of ``[b,H,W]`` (replicated to RGB) → latents ``[N,4,h,w]``."""
        depth_latents = []
        for chunk in chunks:
            chunk = torch.from_numpy(np.ascontiguousarray(chunk))
            images = pad_to_multiple(chunk[:, None].expand(-1, 3, -1, -1).float())
            depth_latents.append(self.encode(images))
        return torch.cat(depth_latents)

    @torch.no_grad()
    def refine_latents(
        self,
        latents: torch.Tensor,
        encoded: torch.Tensor,
        noise: torch.Tensor,
        config: InferenceConfig,
        progress: ProgressCallback | None = None,
    ) -> torch.Tensor:
        """The refinement loop on latents: encoded aligned depth ``[N,4,h,w]`` → refined."""
        n_frames = encoded.shape[0]
        steps = config.refine_steps
        scheduler = self.new_scheduler()
        total_steps = int(steps / 0.5)
        if total_steps > scheduler.config.num_train_timesteps:
            raise ConfigError(
                f"`refine_steps` {steps} needs {total_steps} scheduler steps; the checkpoint "
                f"has {scheduler.config.num_train_timesteps}"
            )
        scheduler.set_timesteps(total_steps, device=self.device)
        timesteps = scheduler.timesteps[int(total_steps * 0.5) :]  # keep the second half

        current = scheduler.add_noise(encoded, noise.expand_as(encoded), timesteps[0])  # [N,4,h,w]

        dilations = refine_dilations(
            n_frames,
            config.refine_snippet_len,
            config.refine_start_dilation,
            steps,
            config.cap_dilation,
        )
        batch_size = config.batch_size or self.auto_batch_size(
            latents.shape[-2:], config.refine_snippet_len
        )
        for step, (t, dilation) in enumerate(zip(timesteps, dilations, strict=True)):
            indices = snippet_indices(n_frames, config.refine_snippet_len, dilation)
            summed = torch.zeros_like(current, dtype=torch.float32)
            counts = torch.zeros(n_frames, device=self.device)
            for start in range(0, len(indices), batch_size):
                flat = torch.from_numpy(indices[start : start + batch_size].reshape(-1)).to(
                    self.device
                )
                pred = self.unet_step(
                    scheduler, latents[flat], current[flat], t, config.refine_snippet_len
                )
                summed.index_add_(0, flat, pred.float())
                counts.index_add_(0, flat, torch.ones_like(flat, dtype=counts.dtype))
            current = (summed / counts[:, None, None, None]).to(self.dtype)
            report(progress, "refine", step + 1, steps)
        return current

    # ---------------------------------------------------------------- the whole run
    def __call__(
        self,
        frames: Iterable[np.ndarray],
        config: InferenceConfig,
        n_frames: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> DepthPrediction:
        config.check()
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        # 1-2. preprocess and encode every frame once
        latents, size = self.encode_frames(frames, config, n_frames, progress)  # [N,4,h,w]
        n_frames = latents.shape[0]
        check_clip_length(n_frames, config.snippet_len)
        dilations = resolve_dilations(
            n_frames, config.snippet_len, config.dilations, config.cap_dilation
        )
        timings["encode"] = time.perf_counter() - clock

        # 3-4. empty-prompt embedding and the shared noise
        self.empty_embedding()
        noise = self.shared_noise(tuple(latents.shape[-2:]), config.seed)  # [1,4,h,w]

        # 5-8. snippets per dilation; a dilation repeated by capping is predicted once
        clock = time.perf_counter()
        indices = [snippet_indices(n_frames, config.snippet_len, d) for d in dilations]
        total = sum(len(indices[dilations.index(d)]) for d in dict.fromkeys(dilations))
        by_dilation: dict[int, np.ndarray] = {}
        for d, idx in zip(dilations, indices, strict=True):
            if d not in by_dilation:
                done = sum(len(v) for v in by_dilation.values())
                by_dilation[d] = self.predict_snippets(
                    latents, noise, idx, size, config, progress, done, total
                )
        snippets = [by_dilation[d] for d in dilations]
        timings["snippets"] = time.perf_counter() - clock

        # 9. co-alignment, merge, renormalisation
        clock = time.perf_counter()
        alignment = coalign(
            snippets,
            indices,
            method=config.aligner,
            confidence=config.confidence,
            progress=None if progress is None else lambda d, t: progress("align", d, t),
        )
        # the merged video becomes the normalised one in place (no second [N,H,W] copy);
        # the result keeps the scales and shifts, not the raw merge
        aligned = normalize_depth(alignment.depth, inplace=True)
        alignment.depth = None
        timings["align"] = time.perf_counter() - clock

        # 10. refinement
        depth = aligned
        if config.refine_steps > 0:
            clock = time.perf_counter()
            depth = self.refine(latents, aligned, noise, size, config, progress)
            timings["refine"] = time.perf_counter() - clock
        if not np.isfinite(depth).all():
            raise RollingDepthError(
                "the model produced non-finite depth; with fp16 try `--dtype bf16` or `fp32`"
            )
        return DepthPrediction(
            depth=depth,
            aligned=aligned,
            alignment=alignment,
            dilations=dilations,
            indices=indices,
            snippets=snippets,
            processing_size=size,
            config=config,
            timings=timings,
        )


def estimated_snippet_count(n_frames: int, config: InferenceConfig) -> int:
    dilations = resolve_dilations(
        n_frames, config.snippet_len, config.dilations, config.cap_dilation
    )
    return sum(n_frames - (config.snippet_len - 1) * d for d in dict.fromkeys(dilations))
