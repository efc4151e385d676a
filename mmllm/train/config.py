"""What a training run is told: ``TrainConfig`` (torch-free, so the CLI builds its flags without
importing the training stack). ``mmllm train --flag`` sets each field; ``--config FILE`` a JSON of
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_REPLAY = 0.5  # share of each fine-tuning batch drawn from the initial model's data
NEW_LR, FINE_TUNE_LR = 1e-3, 3e-4  # default peak learning rates: a new model, a fine-tune


@dataclass
class TrainConfig:
    out: str = "runs/tiny"
    data: str = "synthetic:train"  # or a JSONL file
    heldout: str | None = "synthetic:heldout"  # or a JSONL file, or None / "none"
    init: str | None = None  # start from this checkpoint (fine-tuning)
    image_init: str | None = field(
        default=None,
        metadata={
            "help": "a new model's image encoder starts from these weights (safetensors, e.g. "
            "from `python -m mmllm.train.image_pretrain`)"
        },
    )
    image_fixed_positions: float | None = field(
        default=None,
        metadata={
            "help": "a CNN-hybrid image encoder gets a fixed 2-D sin-cos position table of this "
            "scale (0: none) before training starts, e.g. on a model from --init "
            "(ImageEncoderConfig.fixed_positions); the saved config keeps it"
        },
    )
    projected_image_positions: float | None = field(
        default=None,
        metadata={
            "help": "a fixed 2-D sin-cos table of this scale (0: none) is added to the projected "
            "image tokens, what cross-attention reads, before training starts "
            "(ProjectorConfig.fixed_image_positions); the saved config keeps it"
        },
    )
    steps: int = 3000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float | None = field(
        default=None,
        metadata={
            "help": f"peak learning rate; default {NEW_LR:g}, or {FINE_TUNE_LR:g} with --init "
            f"(fine-tuning at {NEW_LR:g} dropped mmllm-tiny's image questions 7 points)"
        },
    )
    lr_scale: str = field(
        default="",
        metadata={
            "help": "learning-rate factors by parameter-name prefix, e.g. 'recognition.=20': "
            "parts new to a fine-tuned model learn faster than the parts it starts with"
        },
    )
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    stage: str = "full"
    loss_per_example: bool = field(
        default=False,
        metadata={
            "help": "average the loss per example, then over the batch (a one-word answer "
            "weighs as much as a caption), instead of over all labelled tokens"
        },
    )
    patch_weight: float = field(
        default=0.0,
        metadata={
            "help": "> 0: a linear head also predicts what each projected image token's patch "
            "shows, for synthetic images (mmllm.train.aux_losses); its loss weighs this much"
        },
    )
    attend_weight: float = field(
        default=0.0,
        metadata={
            "help": "> 0: for synthetic image questions that name shapes, cross-attention at the "
            "answer's first position is pulled onto those shapes' tokens (mmllm.train."
            "aux_losses); that loss weighs this much"
        },
    )
    length_groups: int = field(
        default=2,
        metadata={
            "help": "the decoder runs each batch as up to this many groups of rows of similar "
            "length, each padded only to its own longest (the same loss, up to rounding; "
            "mmllm.train.grouping); 1: the whole batch at once"
        },
    )
    replay: float | None = field(
        default=None,
        metadata={
            "help": f"with --init: the share of each batch drawn from the initial model's own "
            f"training data (its training_data.json; mmllm.train.replay), so it keeps what it "
            f"knew; default {DEFAULT_REPLAY:g}, 0: none"
        },
    )
    replay_data: str | None = field(
        default=None,
        metadata={"help": "with --init: replay this data spec instead of the recorded one"},
    )
    forgetting_samples: int = field(
        default=1000,
        metadata={
            "help": "with --init: records of each held-out set (the initial model's and "
            "--heldout) scored before and after, for the forgetting report; 0: no report"
        },
    )
    lora_rank: int = 0  # > 0: LoRA adapters on the LM (mmllm.model.lora), trained in every stage
    lora_alpha: float = 16.0
    lora_targets: str = "q_proj,v_proj"  # comma-separated, from mmllm.config.LORA_TARGETS
    seed: int = 0
    max_len: int = 64
    log_every: int = 10
    eval_every: int = 500
    eval_samples: int = 256
    save_every: int = 200
    max_minutes: float | None = field(
        default=None,
        metadata={"help": "end cleanly, with a saved checkpoint, after this many minutes"},
    )
    fit_to_time: bool = field(
        default=False,
        metadata={
            "help": "with --max-minutes: time the first steps, then end warmup + cosine inside "
            "the budget (--steps becomes an upper bound; the fitted count: train_config.json)"
        },
    )
    stop_after: int | None = None  # end this run at this step (the schedule still spans `steps`)
    tokenizer_samples: int = 20000
    num_workers: int = 1
    model: dict = field(default_factory=dict)  # MMConfig as a dict (when not --init)

    def __post_init__(self) -> None:
        lr_scales(self.lr_scale)  # a malformed value fails here, before any work
        if self.lr is None:
            self.lr = FINE_TUNE_LR if self.init else NEW_LR
        if self.replay is None:
            self.replay = DEFAULT_REPLAY if self.init else 0.0


def lr_scales(spec: str) -> dict[str, float]:
    """``"recognition.=20,image_projector.=2"`` -> ``{"recognition.": 20.0, ...}``."""
    scales = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        prefix, sep, value = part.partition("=")
        try:
            scales[prefix] = float(value)
        except ValueError:
            sep = ""
        if not sep or not prefix or scales[prefix] <= 0:
            raise ValueError(f"--lr-scale wants PREFIX=FACTOR (FACTOR > 0), got {part!r}")
    return scales
