"""Small diffusers models with random weights, for tests and timing benchmarks.

They exercise every code path of the real models (pixel and latent, VQ and KL
autoencoders) without any download. Their images are noise, not faces.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel, VQModel

from faceveil.models import DiffusionModel

# The architecture of CompVis/ldm-celebahq-256 (unet/ and vqvae/ configs), for timing.
LDM_CELEBAHQ_256_UNET = dict(
    sample_size=64, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(224, 448, 672, 896), attention_head_dim=32,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
)
LDM_CELEBAHQ_256_VQVAE = dict(
    in_channels=3, out_channels=3, latent_channels=3, num_vq_embeddings=8192, vq_embed_dim=3,
    block_out_channels=(128, 256, 512), layers_per_block=2, sample_size=256,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
)
LDM_CELEBAHQ_256_SCHEDULER = dict(
    beta_start=0.0015, beta_end=0.0195, beta_schedule="linear", num_train_timesteps=1000, clip_sample=False,
)


def _tiny_unet(channels: int, size: int, output_scale: float, condition_channels: int = 0) -> UNet2DModel:
    unet = UNet2DModel(
        sample_size=size, in_channels=channels + condition_channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    # A random network is far rougher than a trained noise predictor (whose eps varies
    # smoothly with its input); shrinking its output gives a comparably smooth function.
    with torch.no_grad():
        unet.conv_out.weight.mul_(output_scale)
        unet.conv_out.bias.mul_(output_scale)
    return unet


def tiny_pixel_model(size: int = 32, seed: int = 0, output_scale: float = 0.1) -> DiffusionModel:
    """A pixel-space UNet2DModel of about 0.1 M parameters on ``size``x``size`` RGB."""
    torch.manual_seed(seed)
    return DiffusionModel(_tiny_unet(3, size, output_scale), DDIMScheduler(**LDM_CELEBAHQ_256_SCHEDULER), model_id="tiny-pixel")


def tiny_inpainting_model(size: int = 32, seed: int = 0, output_scale: float = 0.1) -> DiffusionModel:
    """A pixel-space inpainting UNet: 3 noisy channels plus mask and masked image (4), 3 out."""
    torch.manual_seed(seed)
    unet = _tiny_unet(3, size, output_scale, condition_channels=4)
    return DiffusionModel(unet, DDIMScheduler(**LDM_CELEBAHQ_256_SCHEDULER), model_id="tiny-inpainting", framing="face")


def tiny_latent_model(
    size: int = 32, seed: int = 0, autoencoder: str = "vq", output_scale: float = 0.1
) -> DiffusionModel:
    """A latent model: tiny UNet on a 4x-downsampling VQModel (``"vq"``) or AutoencoderKL (``"kl"``)."""
    torch.manual_seed(seed)
    common = dict(
        in_channels=3, out_channels=3, latent_channels=3, block_out_channels=(16, 32, 32), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        sample_size=size,
    )
    ae = VQModel(num_vq_embeddings=64, vq_embed_dim=3, **common) if autoencoder == "vq" else AutoencoderKL(**common)
    unet = _tiny_unet(3, size // 4, output_scale)
    return DiffusionModel(unet, DDIMScheduler(**LDM_CELEBAHQ_256_SCHEDULER), ae, model_id=f"tiny-latent-{autoencoder}")


def ldm_celebahq_256_random(seed: int = 0) -> DiffusionModel:
    """The ldm-celebahq-256 architecture (UNet 274 M parameters, VQ-f4) with random weights."""
    torch.manual_seed(seed)
    return DiffusionModel(
        UNet2DModel(**LDM_CELEBAHQ_256_UNET),
        DDIMScheduler(**LDM_CELEBAHQ_256_SCHEDULER),
        VQModel(**LDM_CELEBAHQ_256_VQVAE),
        model_id="ldm-celebahq-256-random",
    )


# ---- large photos built from ../shared, for tests, benchmarks and the README figures --------
def _celeba(shared, name: str):
    import numpy as np
    from PIL import Image

    return Image.open(f"{shared}/data/celeba/images/{name}.jpg").convert("RGB"), np


def portrait_photo(shared) -> "np.ndarray":
    """A 1024 x 1024 portrait with a face of about 600 px: CelebA 000176, a 180 px window
    upscaled with Lanczos, plus mild sensor-like noise (seeded) so it is not unnaturally smooth."""
    from PIL import Image

    image, np = _celeba(shared, "000176")
    big = image.crop((38, 40, 218, 220)).resize((1024, 1024), Image.LANCZOS)
    noise = np.random.default_rng(176).normal(0.0, 1.5, (1024, 1024, 3))
    return np.clip(np.rint(np.asarray(big, dtype=np.float64) + noise), 0, 255).astype(np.uint8)


GROUP_FACES = ("000306", "000875", "001618", "000180", "000987", "000795")


def group_photo(shared, width: int = 4000) -> "np.ndarray":
    """A ``width`` x 0.6 ``width`` photo of six people (CelebA tiles upscaled, on a grey wall)."""
    from PIL import Image

    _, np = _celeba(shared, GROUP_FACES[0])
    height = int(round(width * 0.6))
    canvas = Image.new("RGB", (width, height), (118, 124, 131))
    tile = int(width * 0.24)
    for i, name in enumerate(GROUP_FACES):
        image, _ = _celeba(shared, name)
        x = int(width * (0.04 + 0.32 * (i % 3)))
        y = int(height * (0.06 + 0.48 * (i // 3)))
        canvas.paste(image.resize((tile, tile), Image.LANCZOS), (x, y))
    noise = np.random.default_rng(6).normal(0.0, 1.5, (height, width, 3))
    return np.clip(np.rint(np.asarray(canvas, dtype=np.float64) + noise), 0, 255).astype(np.uint8)


# ---- hostile files, for the fuzz tests and benchmarks/fuzz_benchmark.py ----------------
def png_chunk(ctype: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    import struct
    import zlib

    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def png_chunks(png: bytes) -> list[bytes]:
    """The raw chunks (length, type, data, CRC) of a PNG file, after its signature."""
    import struct

    out, pos = [], 8
    while pos + 12 <= len(png):
        (length,) = struct.unpack_from(">I", png, pos)
        out.append(png[pos : pos + 12 + length])
        pos += 12 + length
    return out


def header_bombs(veiled_png: bytes, inflated: int = 200 * 1024 * 1024) -> dict[str, bytes]:
    """PNG files built from a veiled PNG whose headers try to make a reader allocate without bound.

    - ``itxt-format1``: faceveil 0.1's iTXt chunk, zlib-compressed, inflating to ``inflated`` bytes
      (the issue's 204 KB file that once cost 1.1 GB);
    - ``ztxt``: a plain compressed text chunk of the same size (Pillow's own limit must hold);
    - ``veil-claims-4gib``: a ``veIL`` chunk whose length field says 4 GiB;
    - ``veil-huge``: a real ``veIL`` chunk of 8 MiB on a 32 x 32 image (far above its bound).
    """
    import struct
    import zlib

    chunks = png_chunks(veiled_png)
    ihdr, rest = chunks[0], [c for c in chunks[1:] if c[4:8] != b"veIL"]
    compressor = zlib.compressobj(9)
    block = b" " * (1 << 20)
    packed = b"".join(compressor.compress(block) for _ in range(inflated >> 20)) + compressor.flush()
    sig = veiled_png[:8]
    return {
        "itxt-format1": sig + ihdr + png_chunk(b"iTXt", b"faceveil\0\x01\x00\0\0" + packed) + b"".join(rest),
        "ztxt": sig + ihdr + png_chunk(b"zTXt", b"Comment\0\x00" + packed) + b"".join(rest),
        "veil-claims-4gib": sig + ihdr + struct.pack(">I", 2**32 - 1) + b"veIL" + b"faceveil\x02" + b"".join(rest),
        "veil-huge": sig + ihdr + png_chunk(b"veIL", b"faceveil\x02" + bytes(8 << 20)) + b"".join(rest),
    }
