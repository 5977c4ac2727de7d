"""A deliberately plain implementation of docs/method.md with the reference's call structure.

Everything in memory, one UNet call per snippet, the VAE in batches of 4 frames (the
reference's default), the reference's attention layout (every attention, cross-attention
included, on the snippet's frames joined into one token sequence), the dense Adam objective
written out as docs/method.md states it. The engine (batched, streamed, modular) must reproduce it.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F

VAE_BATCH = 4

SCALE = 0.18215


class JoinedAttention:
    """The reference's attention: ``(b n) hw c -> b (n hw) c`` around a stock attention.

    Self- and cross-attention alike; cross-attention uses the text embedding of one frame of
    the snippet (every frame has the same one).
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, num_frames=1):  # fmt: skip
        # the SD2 UNet's transformer attentions: no norms, no residual inside, no rescaling
        assert hidden_states.ndim == 3 and attn.group_norm is None and attn.norm_cross is None
        assert not attn.residual_connection and attn.rescale_output_factor == 1
        n = num_frames
        frames, hw, c = hidden_states.shape
        x = hidden_states.reshape(frames // n, n * hw, c)
        context = x if encoder_hidden_states is None else encoder_hidden_states[::n]
        b = x.shape[0]
        q = attn.to_q(x).view(b, -1, attn.heads, c // attn.heads).transpose(1, 2)
        k = attn.to_k(context).view(b, -1, attn.heads, c // attn.heads).transpose(1, 2)
        v = attn.to_v(context).view(b, -1, attn.heads, c // attn.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, -1, c)
        out = attn.to_out[1](attn.to_out[0](out))
        return out.reshape(frames, hw, c)


@contextmanager
def joined_attention(unet):
    """Run ``unet`` with `JoinedAttention`, then give it back its own processors."""
    before = unet.attn_processors
    unet.set_attn_processor(JoinedAttention())
    try:
        yield
    finally:
        unet.set_attn_processor(before)


def reference_run(
    components, frames, dilations, snippet_len, res, seed, refine_steps, iterations=2000, cap=True
):
    with joined_attention(components.unet):
        return _reference_run(
            components, frames, dilations, snippet_len, res, seed, refine_steps, iterations, cap
        )


def _reference_run(
    components, frames, dilations, snippet_len, res, seed, refine_steps, iterations, cap
):
    unet, vae, sched_proto = components.unet, components.vae, components.scheduler
    tok, text = components.tokenizer, components.text_encoder
    n = len(frames)
    h0, w0 = frames[0].shape[:2]
    f = min(res / w0, res / h0)
    size = (int(h0 * f), int(w0 * f))

    def enc(img):  # [1,3,H,W] in [-1,1]
        m = vae.quant_conv(vae.encoder(img))
        return m[:, :4] * SCALE

    def dec(lat):
        return vae.decoder(vae.post_quant_conv(lat / SCALE)).mean(1)  # [1,H,W]

    with torch.no_grad():
        imgs = []
        for fr in frames:
            x = torch.from_numpy(fr).permute(2, 0, 1)[None].float() * 255.0
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            imgs.append(x / 255.0 * 2 - 1)
        imgs = torch.cat(imgs)
        rgb = torch.cat([enc(imgs[i : i + VAE_BATCH]) for i in range(0, n, VAE_BATCH)])
        ids = tok("", padding="do_not_pad", return_tensors="pt").input_ids
        emb = text(ids)[0]
        noise = torch.randn(
            (1, 4, *rgb.shape[-2:]), generator=torch.Generator("cpu").manual_seed(seed)
        )

        def cap_d(d, L):
            m = int(n / L) - 1
            return min(d, m) if (cap and m < d) else d

        dils = [cap_d(d, snippet_len) for d in dilations]
        snippets, indices = [], []
        for d in dils:
            sched = type(sched_proto).from_config(sched_proto.config)
            idx = [
                [i + j * d for j in range(snippet_len)] for i in range(n - (snippet_len - 1) * d)
            ]
            lats = []
            for snip in idx:
                r = rgb[snip]
                z = noise.repeat(len(snip), 1, 1, 1)
                sched.set_timesteps(1)
                for t in sched.timesteps:
                    out = unet(
                        torch.cat([r, z], 1),
                        t.repeat(len(snip)),
                        encoder_hidden_states=emb.repeat(len(snip), 1, 1),
                        cross_attention_kwargs={"num_frames": len(snip)},
                    ).sample
                    z = sched.step(out, t, z).prev_sample
                lats.append(z)
            flat = torch.cat(lats)  # all frames of all snippets of this dilation, in order
            maps = torch.cat([dec(flat[i : i + VAE_BATCH]) for i in range(0, len(flat), VAE_BATCH)])
            snippets.append(maps.reshape(len(idx), snippet_len, *maps.shape[-2:]))  # [n,L,H,W]
            indices.append(torch.tensor(idx))

    merged = reference_align(snippets, indices, n, iterations)
    with torch.no_grad():
        if refine_steps == 0:
            return merged.numpy()
        sched = type(sched_proto).from_config(sched_proto.config)
        total = int(refine_steps / 0.5)
        sched.set_timesteps(total)
        ts = sched.timesteps[int(total * 0.5) :]
        depth3 = merged[:, None].repeat(1, 3, 1, 1)
        lat = torch.cat([enc(depth3[i : i + VAE_BATCH]) for i in range(0, n, VAE_BATCH)])
        lat = sched.add_noise(lat, noise.repeat(n, 1, 1, 1), ts[0])
        start = cap_d(6, 3)
        for i, t in enumerate(ts):
            d = int((1 - i / len(ts)) * (start - 1)) + 1
            idx = [[k + j * d for j in range(3)] for k in range(n - 2 * d)]
            new = torch.zeros_like(lat)
            cnt = torch.zeros(n)
            for snip in idx:
                out = unet(
                    torch.cat([rgb[snip], lat[snip]], 1),
                    t.repeat(3),
                    encoder_hidden_states=emb.repeat(3, 1, 1),
                    cross_attention_kwargs={"num_frames": 3},
                ).sample
                new[snip] += sched.step(out, t, lat[snip]).prev_sample
                cnt[snip] += 1
            lat = new / cnt[:, None, None, None]
        return torch.cat([dec(lat[i : i + VAE_BATCH]) for i in range(0, n, VAE_BATCH)]).numpy()


def reference_align(snippets, indices, n, iterations=2000):
    """Dense Adam co-alignment, merge and renormalisation, as docs/method.md step 9 states them."""
    mn = min(s.min() for s in snippets)
    snippets = [s - mn for s in snippets]
    red = [
        s[:, :, 2:-2, 2:-2][:, :, ::10, ::10].reshape(s.shape[0], s.shape[1], -1) for s in snippets
    ]
    P = red[0].shape[-1]
    sc = [torch.ones(len(r), 1, 1, requires_grad=True) for r in red]
    sh = [torch.zeros(len(r), 1, 1, requires_grad=True) for r in red]
    opt = torch.optim.Adam(sc + sh, lr=1e-3, betas=(0.5, 0.9))
    for _ in range(iterations):
        opt.zero_grad()
        rows_m, rows_i, rows_b = [], [], []
        for r, s, t, idx in zip(red, sc, sh, indices, strict=False):
            a = r * s + t
            for j in range(a.shape[1]):
                m = torch.zeros(n, P)
                mi = torch.zeros(n, P)
                b = torch.zeros(n, P)
                m = m.index_put((idx[:, j],), a[:, j])
                mi = mi.index_put((idx[:, j],), a[:, j].clip(1e-3) ** -1)
                b = b.index_put((idx[:, j],), torch.ones_like(a[:, j]))
                rows_m.append(m)
                rows_i.append(mi)
                rows_b.append(b)
        M, MI, B = torch.stack(rows_m), torch.stack(rows_i), torch.stack(rows_b)
        tgt = (M.sum(0) / B.sum(0)).detach()
        tgti = (MI.sum(0) / B.sum(0)).detach()
        nrm = tgt.abs().mean(-1, keepdim=True)
        nrmi = tgti.abs().mean(-1, keepdim=True)
        loss = ((M - tgt) * B / nrm).abs().mean() + ((MI - tgti) * B / nrmi).abs().mean()
        loss = loss + sum(
            0.1 * (torch.clamp(1 - s, min=0) ** 2).mean() + 10 * (t**2).mean()
            for s, t in zip(sc, sh, strict=False)
        )
        loss.backward()
        opt.step()

    with torch.no_grad():
        merged = []
        for fidx in range(n):
            vals = []
            for s, a, b, idx in zip(snippets, sc, sh, indices, strict=False):
                aa = s * a[:, :, :, None] + b[:, :, :, None]
                vals.append(aa[idx == fidx])
            merged.append(torch.cat(vals).mean(0))
        merged = torch.stack(merged)
        merged = merged - merged.min()
        merged = merged / merged.max() * 2 - 1
    return merged
