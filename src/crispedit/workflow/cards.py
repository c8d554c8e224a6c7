"""Model cards: what each model or method in a workflow is, its licence, and the references behind it.

``crispedit describe`` prints a card for every model node (and the quality nodes), so a reader of a workflow
knows which model does the work, what it can and cannot do at 4K, and where the claims come from. The
references are those of the project guide (section 2) plus the original papers of the classical methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Reference:
    title: str
    url: str
    note: str = ""

    def to_dict(self) -> dict[str, str]:
        d = {"title": self.title, "url": self.url}
        if self.note:
            d["note"] = self.note
        return d


@dataclass(frozen=True)
class ModelCard:
    """A model or method: what it does, facts that matter for 4K edits, licence, and references."""

    id: str
    name: str
    kind: str
    what: str
    licence: str
    facts: tuple[str, ...] = ()
    limits: tuple[str, ...] = ()
    references: tuple[Reference, ...] = ()
    model: Optional[str] = None
    weights_needed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "what": self.what, "model": self.model,
                "licence": self.licence, "weights_needed": self.weights_needed, "facts": list(self.facts),
                "limits": list(self.limits), "references": [r.to_dict() for r in self.references]}

    def with_model(self, model: Optional[str]) -> ModelCard:
        if not model:
            return self
        from dataclasses import replace

        return replace(self, model=model)


# ----------------------------------------------------------------------------------------------------------------
# references (GUIDE section 2 and the classical papers)
# ----------------------------------------------------------------------------------------------------------------

SD15_GITHUB = Reference(
    "Stable Diffusion 1.5 — recommended model \"Txt2Img-StableDiffusionV1-QGO-PromptingReal\" (GitHub)",
    "https://github.com/Kameronski/stable-diffusion-1.5",
    "a copy of runwayml/stable-diffusion: CompVis latent diffusion code; scripts txt2img, img2img, inpaint; "
    "DDIM/PLMS samplers; 512 px")
LDM_PAPER = Reference("Rombach et al., High-Resolution Image Synthesis with Latent Diffusion Models (CVPR 2022)",
                      "https://arxiv.org/abs/2112.10752", "the latent diffusion method behind Stable Diffusion")
DIFFUSERS = Reference("Hugging Face diffusers (how crispedit runs the SD1.5 weights)",
                      "https://github.com/huggingface/diffusers")
MULTIDIFFUSION = Reference("Bar-Tal et al., MultiDiffusion: Fusing Diffusion Paths for Controlled Image Generation "
                           "(ICML 2023)", "https://arxiv.org/abs/2302.08113",
                           "overlapping windows denoised together, averaged where they overlap")
MIXTURE = Reference("Jiménez, Mixture of Diffusers for scene composition and high resolution image generation (2023)",
                    "https://arxiv.org/abs/2302.02412", "Gaussian weights per tile so tiles blend without seams")
TELEA = Reference("Telea, An Image Inpainting Technique Based on the Fast Marching Method, Journal of Graphics "
                  "Tools 9(1):23-34, 2004", "https://doi.org/10.1080/10867651.2004.10487596")
NAVIER_STOKES = Reference("Bertalmio, Bertozzi, Sapiro, Navier-Stokes, Fluid Dynamics, and Image and Video "
                          "Inpainting, CVPR 2001", "https://doi.org/10.1109/CVPR.2001.990497")
OPENCV_INPAINT = Reference("OpenCV cv::inpaint (INPAINT_TELEA, INPAINT_NS)",
                           "https://docs.opencv.org/4.x/d7/d8b/group__photo__inpaint.html")
PATCHMATCH = Reference("Barnes, Shechtman, Finkelstein, Goldman, PatchMatch: A Randomized Correspondence Algorithm "
                       "for Structural Image Editing, SIGGRAPH 2009 (via PyPatchMatch, MIT)",
                       "https://gfx.cs.princeton.edu/pubs/Barnes_2009_PAR/")
SAGI_PAPER = Reference("SAGI — A Large-scale AI-generated Image Inpainting Benchmark (arXiv 2502.06593)",
                       "http://arxiv.org/pdf/2502.06593v1.pdf",
                       "several models per edit, then an uncertainty-guided realism check keeps only results a "
                       "judge cannot tell from real; human detection accuracy fell from 74% to 35%")
SAGI_CODE = Reference("SAGI code (GitHub)", "https://github.com/mever-team/SAGI",
                      "caps images at 1024 px and saves at the reduced size (never pastes back into the original)")
AIGI_VC_PAPER = Reference("AIGI-VC — AI-generated Image Quality Assessment in Visual Communication "
                          "(arXiv 2412.15677)", "http://arxiv.org/pdf/2412.15677v1.pdf",
                          "2,500 images, pairwise human preferences: judge quality by what the image must "
                          "communicate, pairwise, not only by low-level scores")
AIGI_VC_CODE = Reference("AIGI-VC code and data (GitHub)", "https://github.com/ytian73/aigi-vc")
QUALITY_ASSURED = Reference("Quality Assured — Rethinking Annotation Strategies in Imaging AI (arXiv 2407.17596)",
                            "http://arxiv.org/pdf/2407.17596v2.pdf",
                            "57,648 images, 924 annotators: precise specifications up front beat after-the-fact "
                            "QA — so acceptance thresholds live in the workflow file")
BURT_ADELSON = Reference("Burt, Adelson, A Multiresolution Spline With Application to Image Mosaics, "
                         "ACM Transactions on Graphics 2(4), 1983", "https://doi.org/10.1145/245.247")

# ----------------------------------------------------------------------------------------------------------------
# the cards
# ----------------------------------------------------------------------------------------------------------------

_SD_LIMITS = (
    "composes well only near 512x512 px: crispedit calls it at that size for composition and refines at native "
    "scale with low strength (tiles), so a 4K edit keeps 1:1 detail",
    "its VAE gives NaN around 1500x1500 px untiled: crispedit uses a tiled VAE with shared GroupNorm statistics",
)

CARDS: dict[str, ModelCard] = {c.id: c for c in [
    ModelCard(
        "sd15-inpainting", "Stable Diffusion 1.5 — inpainting", "latent diffusion model (text-guided inpainting)",
        "Regenerates the masked part of an image from a text prompt, consistent with the visible surroundings.",
        "CreativeML OpenRAIL-M (use restrictions apply; read the licence shipped with the weights)",
        facts=(
            "checkpoint sd-v1-5-inpainting: a 9-channel UNet input = 4 noisy latent + 4 masked-image latent + 1 "
            "mask channel (64x64 latents for 512x512 px; VAE downsampling factor 8)",
            "plain 4-channel SD1.5 txt2img fine-tunes also inpaint: the known latents are blended in at every step",
            "text encoder: CLIP ViT-L/14; classifier-free guidance; schedulers DPM++ 2M Karras (default), DDIM, "
            "Euler a, UniPC",
            "run through diffusers, which loads the same weights as the original CompVis/runwayml scripts",
            "default weights: stable-diffusion-v1-5/stable-diffusion-inpainting (Hugging Face), or your own folder / "
            ".safetensors file via the model parameter",
        ),
        limits=_SD_LIMITS,
        references=(SD15_GITHUB, LDM_PAPER, DIFFUSERS),
        model="stable-diffusion-v1-5/stable-diffusion-inpainting", weights_needed=True),
    ModelCard(
        "sd15-txt2img", "Stable Diffusion 1.5 — text-to-image / image-to-image", "latent diffusion model",
        "Generates an image from a text prompt (txt2img), or repaints an existing image with a strength "
        "between 0 and 1 (img2img).",
        "CreativeML OpenRAIL-M (use restrictions apply; read the licence shipped with the weights)",
        facts=(
            "4-channel UNet on 64x64 latents for 512x512 px (VAE downsampling factor 8); CLIP ViT-L/14 text encoder",
            "recommended model: \"Txt2Img-StableDiffusionV1-QGO-PromptingReal\" (an SD1.5 fine-tune); any SD1.5 "
            "checkpoint works via the model parameter",
            "img2img strength 0.3-0.45 keeps the composition and changes style and colour",
        ),
        limits=_SD_LIMITS,
        references=(SD15_GITHUB, LDM_PAPER, DIFFUSERS),
        model="SD1.5 (engine default; recommended: Txt2Img-StableDiffusionV1-QGO-PromptingReal)",
        weights_needed=True),
    ModelCard(
        "tiled-diffusion", "Tiled diffusion and tiled VAE (MultiDiffusion / Mixture of Diffusers)", "sampling method",
        "Lets a 512-px model work on a 4K or 8K canvas: the latent is denoised in overlapping tiles whose "
        "predictions are blended with Gaussian weights at every step; the VAE runs in tiles that share GroupNorm "
        "statistics, so the decoded image has no tone steps between tiles.",
        "method (implementation in crispedit, Apache-2.0)",
        facts=(
            "memory is bounded by the tile size, not the image size",
            "txt2img at 4K: compose at about 512x512 px area (keeping the aspect), upscale, then refine in tiles "
            "with img2img at low strength (a \"hires fix\" that reaches 4K and 8K)",
        ),
        references=(MULTIDIFFUSION, MIXTURE),
    ),
    ModelCard(
        "classical-inpaint", "Classical inpainting (PatchMatch exemplar fill; Telea for thin strokes)",
        "classical algorithm (no weights)",
        "Fills the masked area with patches copied from its surroundings (object removal); no prompt, no model "
        "weights.",
        "PyPatchMatch: MIT; OpenCV: Apache-2.0; crispedit: Apache-2.0",
        facts=(
            "PatchMatch inpainting (multi-scale by its own image pyramid) on the hole's box plus context; windows "
            "above 0.6 MP are filled on a reduced copy and upscaled",
            "the fill's large-scale tone is locked to a smooth membrane of the surroundings, so no lighter or "
            "darker disc shows the mask's outline",
            "thin strokes and dust (no pixel farther than 6 px from the context): Telea's fast marching method",
            "a crop more than 80 % masked, or a hole over 16 MP, is refused with one line (no collage)",
            "the harness then matches the photo's grain and tone from a ring around the mask",
            "works at the crop's native size (no working size)",
        ),
        limits=("copies, never invents: a hole whose true content appears nowhere around it gets the surroundings",
                "ignores the prompt"),
        references=(PATCHMATCH, TELEA, NAVIER_STOKES, OPENCV_INPAINT),
    ),
    ModelCard(
        "quality-gate", "crispedit quality gate", "metric-based judge (no weights)",
        "Checks an edit the way a user zooming in would: pixels outside the blend band identical, seam "
        "visibility against a null distribution of the same contour on untouched areas, detail and noise inside "
        "vs. a ring outside, colour difference (ΔE2000) across the boundary; pass/fail with reasons.",
        "crispedit: Apache-2.0",
        facts=(
            "acceptance thresholds can be written in the workflow file (QualityCheck thresholds), as Quality "
            "Assured recommends precise specifications up front",
            "aimed at the hard case, the seam: the worst places along the contour are reported",
            "compares original and edit as a pair, in the spirit of AIGI-VC's pairwise judgements",
        ),
        references=(AIGI_VC_PAPER, AIGI_VC_CODE, QUALITY_ASSURED),
    ),
    ModelCard(
        "sagi-selection", "SAGI-style candidate selection", "selection rule over candidate edits",
        "Scores several candidate edits (seeds, prompt variants, engines) with the quality gate, rejects those it "
        "fails, keeps the best, and records why each was kept or rejected.",
        "crispedit: Apache-2.0",
        facts=(
            "SAGI inpaints with several models and keeps only results its realism judge cannot tell from real; "
            "crispedit does the same with a pluggable judge (metrics now, a vision-language model where you have "
            "one)",
            "unlike SAGI's code (capped at 1024 px, saved at the reduced size), every candidate here is a full-"
            "resolution edit pasted back into the original",
        ),
        references=(SAGI_PAPER, SAGI_CODE),
    ),
    ModelCard(
        "multiband-compositing", "Multi-band blending, local tone and grain matching", "compositing method",
        "Blends the edit into the original with a Laplacian pyramid (fine detail switches over a narrow band, "
        "low frequencies over a wide one), corrects local tone drift with a smooth membrane fitted on a ring, and "
        "restores the photo's own grain; pixels beyond the band stay bit-identical.",
        "crispedit: Apache-2.0",
        references=(BURT_ADELSON,),
    ),
]}


def cards_for_node(type_name: str, params: dict[str, Any]) -> list[ModelCard]:
    """The cards that explain one node (empty for plumbing nodes like LoadImage)."""
    engine = str(params.get("engine") or "")
    model = params.get("model")
    if type_name == "Inpaint":
        if engine == "classical":
            return [CARDS["classical-inpaint"]]
        if engine == "sd15":
            return [CARDS["sd15-inpainting"].with_model(model)]
        return [_custom_engine(engine)]
    if type_name == "Img2Img":
        if engine == "sd15":
            return [CARDS["sd15-txt2img"].with_model(model), CARDS["tiled-diffusion"]]
        return [_custom_engine(engine)]
    if type_name == "Txt2Img":
        if engine == "sd15":
            return [CARDS["sd15-txt2img"].with_model(model), CARDS["tiled-diffusion"]]
        return [_custom_engine(engine)]
    if type_name == "QualityCheck":
        return [CARDS["quality-gate"]]
    if type_name == "SelectBest":
        return [CARDS["sagi-selection"], CARDS["quality-gate"]]
    if type_name in ("Composite", "ToneMatch", "GrainMatch"):
        return [CARDS["multiband-compositing"]]
    return []


def _custom_engine(engine: str) -> ModelCard:
    return ModelCard(f"engine-{engine}", f"engine '{engine}'", "registered engine",
                     f"An engine registered as '{engine}' (not one of crispedit's built-in engines).",
                     "see the engine's own documentation")


def cards_for_workflow(wf: Any) -> list[ModelCard]:
    """Every distinct card of a workflow, in node order."""
    seen: dict[str, ModelCard] = {}
    for name in wf.order:
        node = wf.nodes[name]
        for card in cards_for_node(node.type.name, node.params):
            key = f"{card.id}:{card.model}"
            if key not in seen:
                seen[key] = card
    return list(seen.values())
