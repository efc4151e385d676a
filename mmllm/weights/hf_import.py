"""Published Hugging Face captioners in our runtime (``mmllm convert``, ``mmllm.load(FOLDER)``).

Each is our design configured: a vision tower whose tokens a decoder reads through a
cross-attention in every block.
- ``VisionEncoderDecoderModel`` (e.g. vit-gpt2-image-captioning): a ViT, its ``enc_to_dec_proj``
  (if any) as a linear projector, a GPT-2 (``mmllm.weights.gpt2``) or BERT-style
  (``mmllm.weights.bert``) decoder.
- ``BlipForConditionalGeneration`` (BLIP captioning): BLIP's vision model, its BERT-style text
  decoder (``mmllm.weights.bert``).
- ``BlipForQuestionAnswering`` (BLIP VQA): the same, with BLIP's text encoder as the question
  encoder: it reads the question with the picture, and the decoder reads its states.
- ``MllamaForConditionalGeneration`` (Llama 3.2 Vision): its tiled vision model, its projector
  as a linear projector, its language model (``mmllm.weights.mllama``); the prompt is its chat
  template's user turn with the image, or ``<|image|><|begin_of_text|>`` and the text.
The tower runs as transformers' own (``encoders.hf_vision``) and no media embeddings are added.
The model keeps its own tokenizer and special tokens (GPT-2's one token both begins and ends),
its prompt (the decoder's start token, then any text: BLIP's text prefix such as "a picture of")
and its generation defaults. Other architectures are refused by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from encoders.hf_vision import tower_config
from mmllm.config import MMConfig, ProjectorConfig
from mmllm.errors import CheckpointError, ConfigError
from mmllm.model.multimodal import MultimodalLM
from mmllm.tokenizer import SpecialTokens, Tokenizer
from mmllm.weights.bert import bert_decoder_config, bert_decoder_state_dict
from mmllm.weights.checkpoint import check_state_dict, save_checkpoint
from mmllm.weights.gpt2 import gpt2_decoder_config, gpt2_state_dict
from mmllm.weights.mllama import mllama_text_config, mllama_text_state_dict

GENERATION_FILE = "generation.json"
DECODERS = ("gpt2", "bert")  # a VisionEncoderDecoderModel's decoders we import
BLIP = ("BlipForConditionalGeneration", "BlipForQuestionAnswering")
# where MllamaForConditionalGeneration keeps its parts
VISION = "model.vision_model."
PROJECTOR = "model.multi_modal_projector."
LANGUAGE = "model.language_model."
FAMILIES = {
    "vision-encoder-decoder": "VisionEncoderDecoderModel (ViT encoder, GPT-2 or BERT decoder)",
    "blip": "BlipForConditionalGeneration (BLIP captioning), BlipForQuestionAnswering (VQA)",
    "mllama": "MllamaForConditionalGeneration (Llama 3.2 Vision)",
}


@dataclass
class Imported:
    """A converted model, its tokenizer and its generation defaults (``generation.json``:
    ``max_new_tokens`` and ``num_beams``, where the model's own config sets them)."""

    model: MultimodalLM
    tokenizer: Tokenizer
    generation: dict[str, int] = field(default_factory=dict)


def is_hf_folder(path: str | Path) -> bool:
    """Whether ``path`` is a Hugging Face model folder (its ``config.json`` names a
    ``model_type``) rather than an mmllm checkpoint."""
    try:
        return "model_type" in json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def convert(folder: str | Path) -> Imported:
    """The Hugging Face model in ``folder`` as an mmllm model, in memory (weights fp32)."""
    folder = Path(folder)
    hf = _read_json(folder / "config.json")
    kind = hf.get("model_type")
    if kind not in FAMILIES:
        named = ", ".join(hf.get("architectures") or []) or "no architecture"
        raise ConfigError(
            f"{folder} holds a {kind!r} model ({named}); mmllm imports "
            f"{'; '.join(FAMILIES.values())}"
        )
    if kind == "blip":
        return _blip(folder, hf)
    if kind == "mllama":
        return _mllama(folder, hf)
    return _vision_encoder_decoder(folder, hf)


def save_imported(imported: Imported, out: str | Path, source: str | Path) -> Path:
    """Write ``imported`` as an mmllm checkpoint folder (weights, config, tokenizer, generation
    defaults, a short card naming ``source``)."""
    config = imported.model.config
    card = (
        f"# Imported from {Path(source).name}\n\n"
        f"Converted by `mmllm convert` from a Hugging Face folder: image encoder "
        f"{config.image.hf_config.get('model_type')}, decoder of {config.decoder.n_layers} "
        f"layers x {config.decoder.dim}, vocabulary {config.decoder.vocab_size}. The weights "
        "are the original's, unchanged; its licence applies.\n"
    )

    def generation(folder: Path) -> None:
        (folder / GENERATION_FILE).write_text(json.dumps(imported.generation, indent=2) + "\n")

    return save_checkpoint(
        imported.model, out, tokenizer=imported.tokenizer, card=card, extra=generation
    )


def read_generation(folder: str | Path) -> dict[str, int]:
    """A checkpoint's generation defaults (``{}`` without ``generation.json``)."""
    return _optional_json(Path(folder) / GENERATION_FILE)


def vision_encoder_decoder_model(
    hf: dict[str, Any],
    state: dict[str, torch.Tensor],
    source: str,
    preprocessor: Path | None = None,
) -> MultimodalLM:
    """Our model of a ``VisionEncoderDecoderModel``: its config ``hf`` (a dict), its tensors
    ``state`` (the installed transformers' names), its ``preprocessor_config.json`` if any."""
    encoder, decoder = hf.get("encoder", {}), hf.get("decoder", {})
    kind = decoder.get("model_type")
    if encoder.get("model_type") != "vit" or kind not in DECODERS:
        raise ConfigError(
            f"{source}: a VisionEncoderDecoderModel of {encoder.get('model_type')!r} and "
            f"{kind!r}; mmllm imports a ViT encoder with a GPT-2 or BERT decoder"
        )
    linear = "enc_to_dec_proj.weight" in state
    if kind == "gpt2":
        decoder_config = gpt2_decoder_config(decoder, cross_attn_every=1, gated=False)
    else:
        decoder_config = bert_decoder_config(decoder)
    image = tower_config(encoder, preprocessor)
    model = _captioner(image, decoder_config, "linear" if linear else "identity")
    tower = _renamed(state, "encoder.", "image_encoder.tower.")
    ours = {k: v for k, v in tower.items() if not k.startswith("image_encoder.tower.pooler.")}
    ours.update(_renamed(state, "enc_to_dec_proj.", "image_projector.proj."))  # if any
    lm = _renamed(state, "decoder.")
    if kind == "gpt2":
        mapped = gpt2_state_dict(lm, decoder_config, source, cross_attn=True)
    else:
        mapped = bert_decoder_state_dict(lm, decoder_config, source)
    ours.update(_renamed(mapped, "", "decoder."))
    return _loaded(model, ours, source)


def blip_model(
    hf: dict[str, Any],
    state: dict[str, torch.Tensor],
    source: str,
    preprocessor: Path | None = None,
) -> MultimodalLM:
    """Our model of a ``BlipForConditionalGeneration``, or of a ``BlipForQuestionAnswering``
    where ``state`` holds its question encoder (``text_encoder.*``): config ``hf`` (a dict),
    tensors ``state`` (the installed transformers' names), its ``preprocessor_config.json``."""
    vision = {**hf.get("vision_config", {}), "model_type": "blip_vision_model"}
    image = tower_config(vision, preprocessor)
    text_config = hf.get("text_config", {})
    question = None
    if any(k.startswith("text_encoder.") for k in state):
        question = bert_decoder_config(text_config, media_dim=image.dim, encoder=True)
        reads = text_config.get("encoder_hidden_size", image.dim)
        if reads != question.dim:  # as BLIP's own: the decoder reads the question's states
            raise ConfigError(
                f"{source}: BLIP VQA's decoder reads {reads}-wide states but its question "
                f"encoder is {question.dim} wide"
            )
        decoder_config = bert_decoder_config(text_config)
    else:
        decoder_config = bert_decoder_config(text_config, media_dim=image.dim)
    model = _captioner(image, decoder_config, "identity", question)
    ours = _renamed(state, "vision_model.", "image_encoder.tower.")
    # the question encoder is a BlipTextModel: BERT's names without the "bert." level
    for theirs, level, mine, config in (
        ("text_decoder.", "", "decoder.", decoder_config),
        ("text_encoder.", "bert.", "question_encoder.", question),
    ):
        if config is not None:
            part = _renamed(state, theirs, level)
            ours.update(_renamed(bert_decoder_state_dict(part, config, source), "", mine))
    return _loaded(model, ours, source)


def mllama_model(
    hf: dict[str, Any],
    state: dict[str, torch.Tensor],
    source: str,
    preprocessor: Path | None = None,
) -> MultimodalLM:
    """Our model of a ``MllamaForConditionalGeneration``: config ``hf`` (a dict), tensors
    ``state`` (the installed transformers' names), its ``preprocessor_config.json`` if any."""
    vision = {**hf.get("vision_config", {}), "model_type": "mllama_vision_model"}
    image = tower_config(vision, preprocessor)
    image_token = hf.get("image_token_index")
    decoder_config = mllama_text_config(hf.get("text_config", {}), image_token_id=image_token)
    model = _captioner(image, decoder_config, "linear")
    ours = _renamed(state, VISION, "image_encoder.tower.")
    ours.update(_renamed(state, PROJECTOR, "image_projector.proj."))
    text = _renamed(state, LANGUAGE, "model.")  # as MllamaForCausalLM names them
    text.update(_renamed(state, "lm_head.", "lm_head."))
    mapped = mllama_text_state_dict(text, decoder_config, source)
    ours.update(_renamed(mapped, "", "decoder."))
    return _loaded(model, ours, source)


def _renamed(state: dict[str, torch.Tensor], theirs: str, ours: str = "") -> dict:
    """The tensors of ``state`` named under ``theirs``, named under ``ours`` instead."""
    return {ours + k[len(theirs) :]: v for k, v in state.items() if k.startswith(theirs)}


def _captioner(image, decoder, projector: str, question=None) -> MultimodalLM:
    """An imported captioner's model (or, with a ``question`` encoder config, a VQA model):
    one image per request, no audio, the encoder's tokens read as they are (no media
    embeddings)."""
    projector_config = ProjectorConfig(kind=projector, media_embeddings=False)
    config = MMConfig(
        image=image,
        audio=None,
        projector=projector_config,
        decoder=decoder,
        max_media_items=1,
        question_encoder=question,
    )
    return MultimodalLM(config)


def _loaded(model: MultimodalLM, state: dict[str, torch.Tensor], source: str) -> MultimodalLM:
    """``model`` holding ``state``'s tensors themselves (no copy), checked strictly."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _vision_encoder_decoder(folder: Path, hf: dict[str, Any]) -> Imported:
    decoder = hf.get("decoder", {})
    preprocessor = folder / "preprocessor_config.json"
    state = _hf_state(folder, "VisionEncoderDecoderModel")
    model = vision_encoder_decoder_model(hf, state, str(folder), preprocessor)
    generation = _optional_json(folder / "generation_config.json")
    ids = {**hf, **generation}
    start = _first(ids.get("decoder_start_token_id"), decoder.get("bos_token_id"))
    # a BERT decoder's sequences end at its separator
    eos = _first(ids.get("eos_token_id"), decoder.get("eos_token_id"), decoder.get("sep_token_id"))
    pad = _first(ids.get("pad_token_id"), decoder.get("pad_token_id"))
    tokenizer = _tokenizer(folder, start, eos, pad)
    return Imported(model, tokenizer, _generation_defaults(generation or hf))


def _blip(folder: Path, hf: dict[str, Any]) -> Imported:
    architectures = hf.get("architectures") or [BLIP[0]]
    known = [a for a in architectures if a in BLIP]
    if not known:
        raise ConfigError(
            f"{folder} holds a BLIP {', '.join(architectures)}; mmllm imports BLIP captioning "
            f"and VQA ({', '.join(BLIP)})"
        )
    preprocessor = folder / "preprocessor_config.json"
    state = _hf_state(folder, known[0])
    model = blip_model(hf, state, str(folder), preprocessor)
    text = hf.get("text_config", {})
    # a caption starts from the decoder's begin token and ends at BERT's separator
    eos = text.get("sep_token_id", 102)
    tokenizer = _tokenizer(folder, text.get("bos_token_id"), eos, text.get("pad_token_id", 0))
    generation = _optional_json(folder / "generation_config.json")
    return Imported(model, tokenizer, _generation_defaults(generation or text))


def _mllama(folder: Path, hf: dict[str, Any]) -> Imported:
    state = _hf_state(folder, "MllamaForConditionalGeneration")
    model = mllama_model(hf, state, str(folder), folder / "preprocessor_config.json")
    text = hf.get("text_config", {})
    generation = _optional_json(folder / "generation_config.json")
    hf_tokenizer = _hf_tokenizer(folder)
    eos = _first(generation.get("eos_token_id"), text.get("eos_token_id"))
    if isinstance(eos, list):  # one end token: the tokenizer's own if listed (an instruct
        # model's <|eot_id|>, which ends a chat turn), else the first
        eos = hf_tokenizer.eos_token_id if hf_tokenizer.eos_token_id in eos else eos[0]
    pad = _first(generation.get("pad_token_id"), text.get("pad_token_id"))
    backend = _backend(folder)
    roles = SpecialTokens.of_ids(backend, text.get("bos_token_id"), eos, pad, source=str(folder))
    image = backend.id_to_token(hf.get("image_token_index"))
    if image is None:
        raise CheckpointError(f"{folder}: the tokenizer has no image token")
    template = _chat_template(hf_tokenizer, folder, image) or f"{image}{roles.bos}{{prompt}}"
    tokenizer = Tokenizer(backend, roles, prompt_template=template, caption_prompt="")
    return Imported(model, tokenizer, _generation_defaults(generation))


def _hf_tokenizer(folder: Path):
    """transformers' tokenizer of ``folder`` (for what only it reads: the chat template, the
    end token its config names)."""
    from transformers import AutoTokenizer  # heavy: only when importing

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder}: cannot read its tokenizer: {err}") from err


def _chat_template(tokenizer, folder: Path, image: str) -> str | None:
    """The user turn of ``tokenizer``'s chat template holding an image and ``{prompt}``, up to
    the assistant's answer (None: it has no chat template)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "{prompt}"}]}]
    text = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    if image not in text or text.count("{prompt}") != 1:
        raise CheckpointError(f"{folder}: its chat template does not place an image and a text")
    return text


def _hf_state(folder: Path, architecture: str) -> dict[str, torch.Tensor]:
    """The folder's tensors under the installed transformers' names (it reads older layouts)."""
    import transformers  # heavy: only when importing

    try:
        hf = getattr(transformers, architecture).from_pretrained(
            folder, dtype=torch.float32, local_files_only=True
        )
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {folder}: {err}") from err
    return hf.state_dict()


def _tokenizer(folder: Path, start: int | None, eos: int | None, pad: int | None) -> Tokenizer:
    """The model's own tokenizer, its roles from the model's token ids: begin = the decoder's
    start token, end, padding (the end token where none is set); no prompt end."""
    backend = _backend(folder)
    roles = SpecialTokens.of_ids(backend, start, eos, pad, source=str(folder))
    return Tokenizer(backend, roles, prompt_template=roles.bos + "{prompt}", caption_prompt="")


def _backend(folder: Path):
    """``tokenizer.json``, or the fast tokenizer transformers builds from the folder's files
    (GPT-2's ``vocab.json`` + ``merges.txt``)."""
    from tokenizers import Tokenizer as HFTokenizer

    file = folder / "tokenizer.json"
    if file.is_file():
        return HFTokenizer.from_file(str(file))
    from transformers import AutoTokenizer  # heavy: only without a tokenizer.json

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True).backend_tokenizer
    except (OSError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{folder}: no tokenizer that mmllm can read: {err}") from err


def _generation_defaults(generation: dict[str, Any]) -> dict[str, int]:
    """``max_new_tokens`` and ``num_beams`` from a generation config (``max_length`` counts
    the decoder's start token)."""
    out = {}
    if generation.get("max_new_tokens"):
        out["max_new_tokens"] = int(generation["max_new_tokens"])
    elif generation.get("max_length"):
        out["max_new_tokens"] = max(1, int(generation["max_length"]) - 1)
    if generation.get("num_beams"):
        out["num_beams"] = int(generation["num_beams"])
    return out


def _first(*values: Any) -> Any:
    """The first of ``values`` that is set (not None)."""
    return next((v for v in values if v is not None), None)


def _optional_json(file: Path) -> dict[str, Any]:
    """``file``'s JSON object, or ``{}`` where there is no such file."""
    return _read_json(file) if file.is_file() else {}


def _read_json(file: Path) -> dict[str, Any]:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {file}: {err}") from err
