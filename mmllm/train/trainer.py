"""The training loop: one CPU, one GPU, or many processes under ``torchrun`` (DDP).

AdamW with linear warmup and cosine decay (computed from the step, so resuming needs no
scheduler state), gradient accumulation and clipping, bf16 autocast on CUDA, periodic atomic
checkpoints with exact resume, held-out evaluation, metrics as JSONL and a PNG plot.

With ``max_minutes`` and ``fit_to_time`` the schedule is fitted to the budget: after timing
``FIT_STEPS`` steps, ``steps`` becomes the count that ends (warmup and cosine included) before
the deadline, so a time-boxed run still decays its learning rate fully. Resuming such a run
exactly takes ``--steps`` set to the fitted count (``train_config.json``) without the fit.

Data position is the step: micro-batch ``m`` of step ``s`` on rank ``r`` holds source records
``((s * accum + m) * world + r) * B + j``; so resume and sharding need no iterator state.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mmllm.config import LoRAConfig, MMConfig, with_position_tables
from mmllm.data.collate import Collator, TrainBatch
from mmllm.data.sources import build_source, split_mixture
from mmllm.errors import InputError
from mmllm.model.lora import enable_lora
from mmllm.model.multimodal import MultimodalLM
from mmllm.processing import MediaProcessor
from mmllm.tokenizer import tokenizer_for_records
from mmllm.train import aux_losses, forgetting
from mmllm.train.config import TrainConfig, lr_scales
from mmllm.train.forgetting import Scorer
from mmllm.train.loss import TrainingLoss
from mmllm.train.optim import adamw, lr_at
from mmllm.train.plot import plot_metrics
from mmllm.train.replay import (
    TrainingData,
    plan_replay,
    read_training_data,
    with_replay,
    write_training_data,
)
from mmllm.train.stages import set_trainable
from mmllm.train.state import STATE_JSON, load_train_state, save_train_state
from mmllm.weights.checkpoint import (
    CONFIG_FILE,
    RUN_CHECKPOINT,
    check_state_dict,
    load_model,
    load_tokenizer,
    resolve_checkpoint,
    save_checkpoint,
)

log = logging.getLogger(__name__)
CHECKPOINT_DIR = RUN_CHECKPOINT
FIT_STEPS = 20  # steps timed (after two of start-up) before fitting the schedule to the time
FIT_MARGIN = 0.95  # share of the time left that the fitted schedule plans to use
BEFORE_JSON = "heldout_before.json"  # the initial weights' held-out scores (forgetting report)


class StepBatches(Dataset):
    """Item ``s`` = the ``grad_accum`` micro-batches of step ``s`` for this rank."""

    def __init__(self, source, collator: Collator, cfg: TrainConfig, rank: int, world: int):
        self.source, self.collator, self.cfg = source, collator, cfg
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> list[TrainBatch]:
        B, accum = self.cfg.batch_size, self.cfg.grad_accum
        batches = []
        for micro in range(accum):
            first = ((step * accum + micro) * self.world + self.rank) * B
            batches.append(self.collator([self.source[first + j] for j in range(B)]))
        return batches


def load_image_encoder(model: MultimodalLM, path: str) -> None:
    """Put the image encoder weights in safetensors file ``path`` into ``model``, checking that
    every tensor matches (``CheckpointError`` otherwise)."""
    if model.image_encoder is None:
        raise InputError("--image-init was given but the model has no image encoder")
    if not Path(path).is_file():
        raise InputError(f"--image-init: no such file {path}")
    state = load_file(path)
    check_state_dict(model.image_encoder, state, path)
    model.image_encoder.load_state_dict(state)


def _distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def has_begun(out: str | Path) -> bool:
    """Whether a run in ``out`` has saved a training state (so ``train`` resumes it)."""
    return (Path(out) / CHECKPOINT_DIR / STATE_JSON).is_file()


def _with_position_tables(config: MMConfig, cfg: TrainConfig) -> MMConfig:
    """The model's config with the run's fixed position tables (set before it is built)."""
    return with_position_tables(config, cfg.image_fixed_positions, cfg.projected_image_positions)


def train(cfg: TrainConfig, scorer: Scorer | None = None) -> Path:
    """Run (or resume) training as ``cfg`` says; returns the final checkpoint folder.

    ``scorer`` scores the held-out sets during the run and for the forgetting report
    (``mmllm.eval.run.HeldOutScorer``, which ``mmllm train`` passes); without one neither is
    measured. Training never imports evaluation.

    Under ``torchrun`` the process group made here is released on the way out
    (``release_process_group``)."""
    entered = time.time()
    owns_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    rank, world, device = _distributed()
    try:
        return _train(cfg, entered, rank, world, device, scorer)
    finally:
        if owns_group:
            release_process_group()


def release_process_group() -> None:
    """Free the process group while the interpreter is whole: first whatever still holds it
    (DDP's reducer can sit in a reference cycle until a collection), then the group itself.
    Left to the interpreter's exit, gloo's threads were torn down while still joinable and a
    rank aborted ("terminate called without an active exception", SIGABRT)."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def _train(
    cfg: TrainConfig,
    entered: float,
    rank: int,
    world: int,
    device: torch.device,
    scorer: Scorer | None,
) -> Path:
    out = Path(cfg.out)
    ckpt = out / CHECKPOINT_DIR
    torch.manual_seed(cfg.seed)
    resume = has_begun(out)
    source, learnt = _training_source(cfg)
    if rank == 0 and learnt.data != cfg.data:
        print(f"fine-tuning on {learnt.data} (the replay: mmllm.train.replay)", flush=True)
    if resume:
        model, tokenizer = load_model(ckpt), load_tokenizer(ckpt)
    elif cfg.init:
        init = resolve_checkpoint(cfg.init)
        if cfg.image_init:
            raise InputError(
                "--image-init starts a new model's image encoder; with --init the "
                "whole model comes from that checkpoint: give one of the two"
            )

        config = _with_position_tables(MMConfig.load(init / CONFIG_FILE), cfg)
        model, tokenizer = load_model(init, config=config), load_tokenizer(init)
    else:
        config = MMConfig.from_dict(cfg.model) if cfg.model else MMConfig()
        model = MultimodalLM(_with_position_tables(config, cfg))
        tokenizer = tokenizer_for_records(
            source, model.config.decoder.vocab_size, cfg.tokenizer_samples
        )
        if tokenizer.vocab_size > model.config.decoder.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} tokens > decoder vocab_size "
                f"{model.config.decoder.vocab_size}"
            )
        if cfg.image_init:
            load_image_encoder(model, cfg.image_init)
    if cfg.lora_rank:
        targets = tuple(t.strip() for t in cfg.lora_targets.split(",") if t.strip())
        enable_lora(model, LoRAConfig(cfg.lora_rank, cfg.lora_alpha, targets))
    model.to(device)
    report_sets = _report_sets(cfg, learnt) if scorer is not None else []
    if rank == 0 and report_sets and not resume:  # the initial weights' scores, for the report
        out.mkdir(parents=True, exist_ok=True)
        before = forgetting.heldout_scores(
            scorer, model, tokenizer, report_sets, cfg.forgetting_samples
        )
        (out / BEFORE_JSON).write_text(json.dumps(before, indent=2) + "\n")
    trainable = set_trainable(model, cfg.stage)
    head, image_targets = None, None  # the image losses' head and targets (aux_losses)
    if cfg.patch_weight or cfg.attend_weight:
        grid = aux_losses.token_grid(model)
        head = aux_losses.PatchHead(model.config.decoder.dim).to(device)
        if resume:
            aux_losses.load_head(head, ckpt)
        image_targets = functools.partial(aux_losses.image_targets, grid=grid)
    trained = TrainingLoss(
        model, cfg.loss_per_example, cfg.length_groups, head, cfg.patch_weight, cfg.attend_weight
    )
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if head is not None:  # after the model's, as before: saved optimizer states still fit
        named += [(f"patch_head.{n}", p) for n, p in head.named_parameters()]
    optimizer = adamw(
        named, cfg.lr, cfg.weight_decay, fused=device.type == "cuda", scales=lr_scales(cfg.lr_scale)
    )
    start, elapsed_before = 0, 0.0
    if resume:
        info = load_train_state(ckpt, optimizer)
        start, elapsed_before = info["step"], info["elapsed"]
        log.info("resumed from %s at step %d", ckpt, start)
    # a batch without audio (or images) leaves that encoder unused, and each rank has its own
    # batch: unused parameters must count as reduced, or the ranks fall out of step
    ddp = DistributedDataParallel(trained, find_unused_parameters=True) if world > 1 else trained
    media_processor = MediaProcessor(
        model.config.image,
        model.config.audio,
        truncate_audio=True,
        recognizer=model.config.recognizer,
        recognition_cache={},  # records without stored recognitions: each image run once
    )
    collator = Collator(tokenizer, media_processor, cfg.max_len, image_targets)
    loader = DataLoader(
        StepBatches(source, collator, cfg, rank, world),
        sampler=range(start, cfg.steps),
        batch_size=None,
        num_workers=cfg.num_workers,
        prefetch_factor=2 if cfg.num_workers else None,
        persistent_workers=False,
    )
    heldout = _heldout_records(cfg) if rank == 0 and scorer is not None else []
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_config(out, cfg)
        log.info("%d trainable tensors; %.2fM parameters", len(trainable), _count(model) / 1e6)
    t0 = time.time()
    deadline = t0 + cfg.max_minutes * 60 if cfg.max_minutes is not None else None
    fit_from = start + 2 if cfg.fit_to_time and deadline is not None else None
    fit_t0 = 0.0
    step, done, elapsed = start, start, elapsed_before
    # on rank 0 only, and only on a terminal (logs keep metrics.jsonl instead)
    bar = tqdm(total=cfg.steps, initial=start, disable=True if rank else None, desc="train")
    for step, micro_batches in zip(range(start, cfg.steps), loader, strict=False):
        trained.train()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg) * group.get("lr_scale", 1.0)
        total = patch_total = attend_total = 0.0  # the patch and attend losses: in the total
        for i, batch in enumerate(micro_batches):
            batch = batch.to(device)
            sync = i == len(micro_batches) - 1 or world == 1
            ctx = ddp.no_sync() if not sync else contextlib.nullcontext()
            with ctx, torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                losses = ddp(batch.token_ids, batch.media, batch.labels, batch.patch_targets)
                (losses["loss"] / len(micro_batches)).backward()
            total += losses["loss"].item() / len(micro_batches)
            patch_total += losses["patch"].item() / len(micro_batches)
            attend_total += losses["attend"].item() / len(micro_batches)
        grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3f}")
        elapsed = elapsed_before + time.time() - t0
        if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps):
            row = {"step": done, "loss": total, "lr": lr_at(step, cfg)}
            row.update(grad_norm=float(grad_norm), elapsed_s=round(elapsed, 1))
            if cfg.patch_weight:
                row["patch_loss"] = patch_total
            if cfg.attend_weight:
                row["attend_loss"] = attend_total
            _log_metrics(out, row)
        out_of_time = deadline is not None and time.time() > deadline
        out_of_time |= cfg.stop_after is not None and done >= cfg.stop_after
        if world > 1 and deadline is not None:
            flag = torch.tensor([float(out_of_time)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if heldout and (done % cfg.eval_every == 0 or done == cfg.steps or out_of_time):
            model.eval()
            scores = scorer.score(model, tokenizer, heldout)
            _log_metrics(out, {"step": done, "eval": scores, "elapsed_s": round(elapsed, 1)})
            bar.write(f"step {done}: " + _summary(scores))
        if done % cfg.save_every == 0 or done == cfg.steps or out_of_time:
            _save(
                ckpt, model, head, tokenizer, optimizer,
                step=done, elapsed=elapsed, cfg=cfg, learnt=learnt, rank=rank, world=world,
            )  # fmt: skip
        if out_of_time:
            log.info("time budget of %s min reached at step %d", cfg.max_minutes, done)
            break
        if fit_from is not None and done == fit_from:
            fit_t0 = time.time()
        elif fit_from is not None and done == fit_from + FIT_STEPS:
            rate = FIT_STEPS / max(1e-9, time.time() - fit_t0)
            cfg.steps = fit_steps(done, rate, deadline, cfg.steps, device, world)
            fit_from = None
            bar.total = cfg.steps
            if rank == 0:
                _write_config(out, cfg)  # the fitted step count
                _log_metrics(out, {"step": done, "fitted_steps": cfg.steps, "steps_per_s": rate})
            log.info("%.2f steps/s: the schedule now ends at step %d", rate, cfg.steps)
        if done >= cfg.steps:
            break
    bar.close()
    finished = done >= cfg.steps or out_of_time
    if rank == 0 and finished and (out / BEFORE_JSON).is_file():
        _report_forgetting(
            scorer, model, tokenizer, cfg, out, learnt, steps=done, elapsed=elapsed, say=bar.write
        )
    if rank == 0:  # what the loop's elapsed_s leaves out: set-up, the last evaluation and save
        overhead = time.time() - entered - (elapsed - elapsed_before)
        _log_metrics(out, {"step": done, "overhead_s": round(overhead, 1)})
    if world > 1:
        _check_replicas_agree(trained, out, rank)
    return ckpt


def fit_steps(
    done: int, rate: float, deadline: float, upper: int, device: torch.device, world: int
) -> int:
    """The step count at which a schedule running at ``rate`` steps/s ends before ``deadline``
    (at most ``upper``, at least one more step); rank 0's answer on every rank."""
    steps = done + int(rate * (deadline - time.time()) * FIT_MARGIN)
    steps = max(done + 1, min(upper, steps))
    if world > 1:
        shared = torch.tensor([steps if dist.get_rank() == 0 else 0], device=device)
        dist.broadcast(shared, 0)
        steps = int(shared.item())
    return steps


def _check_replicas_agree(model: torch.nn.Module, out: Path, rank: int) -> None:
    """DDP keeps replicas identical; verify it (a cheap checksum per rank) and log it."""
    device = next(model.parameters()).device
    total = sum(float(p.double().sum()) for p in model.parameters())
    checksum = torch.tensor([total], dtype=torch.float64, device=device)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    values = [float(g.item()) for g in gathered]
    if rank == 0:
        _log_metrics(out, {"replica_checksums": values})
    if len(set(values)) != 1:
        raise RuntimeError(f"DDP replicas diverged: weight checksums {values}")


def _heldout_records(cfg: TrainConfig) -> list:
    if not cfg.heldout or cfg.heldout.lower() == "none":
        return []
    source = build_source(cfg.heldout, seed=cfg.seed, shuffle=False)
    return [source[i] for i in range(min(cfg.eval_samples, len(source)))]


def _training_source(cfg: TrainConfig):
    """The run's data source (with the replay, when fine-tuning) and what it records as learnt
    (``TrainingData``: the data, the held-out sets that measure it, how to remake files)."""
    source = build_source(cfg.data, seed=cfg.seed)
    heldout = () if not cfg.heldout or cfg.heldout.lower() == "none" else (cfg.heldout,)
    if not cfg.init:
        if cfg.replay or cfg.replay_data:
            raise InputError(
                "--replay and --replay-data mix in an initial model's data: add --init"
            )
        return source, TrainingData(cfg.data, heldout)
    recorded = read_training_data(resolve_checkpoint(cfg.init))
    share = cfg.replay
    if cfg.replay_data:
        recorded = TrainingData(cfg.replay_data, recorded.heldout if recorded else ())
    if recorded is None:
        if share:
            log.warning(
                "%s records no training data (training_data.json): nothing is replayed and "
                "forgetting is not measured; give --replay-data SPEC to replay some",
                cfg.init,
            )
        return source, TrainingData(cfg.data, heldout)
    plan = plan_replay(recorded)
    if share and plan.missing:
        log.warning("replay: %s", plan.describe())
    source = with_replay(source, plan, share, cfg.seed, image_size=128)
    mixed = share > 0 and bool(plan.parts)
    parts = [(s, w * (1 - share if mixed else 1)) for s, w in split_mixture(cfg.data)]
    parts += [(s, w * share) for s, w in plan.parts] if mixed else []
    learnt = TrainingData(
        "+".join(f"{s}@{w:.4g}" for s, w in parts) if len(parts) > 1 else parts[0][0],
        tuple(dict.fromkeys(recorded.heldout + heldout)),
        recorded.make,
    )
    return source, learnt


def _report_sets(cfg: TrainConfig, learnt: TrainingData) -> list[str]:
    """The held-out sets the forgetting report scores (none when not fine-tuning)."""
    if not cfg.init or cfg.forgetting_samples <= 0:
        return []
    return [h for h in learnt.heldout if h.startswith("synthetic") or Path(h).is_file()]


def _report_forgetting(
    scorer: Scorer, model, tokenizer, cfg, out: Path, learnt, *, steps: int, elapsed: float, say
) -> None:
    """Score the held-out sets again, and write the forgetting report, the run's summary and
    the checkpoint's model card."""
    before = json.loads((out / BEFORE_JSON).read_text())
    after = forgetting.heldout_scores(
        scorer, model, tokenizer, list(before), cfg.forgetting_samples
    )
    rows = forgetting.report(before, after)
    share = cfg.replay
    facts = {
        "init": cfg.init,
        "data": cfg.data,
        "trained_on": learnt.data,
        "replay": share if learnt.data != cfg.data else 0.0,
        "stage": cfg.stage,
        "lora_rank": cfg.lora_rank,
        "steps": steps,
        "train_minutes": round(elapsed / 60, 2),
    }
    forgetting.save(out, rows, facts)
    forgetting.plot(rows, out / forgetting.PLOT_PNG)
    replay = (
        f"{facts['replay']:.0%} of each batch replayed the initial model's data"
        if facts["replay"]
        else "no replay"
    )
    lora = f", LoRA rank {cfg.lora_rank}" if cfg.lora_rank else ""
    text = "\n".join(
        [
            f"# Fine-tune of {cfg.init}",
            "",
            f"Trained on `{learnt.data}` ({replay}): {steps} steps, {elapsed / 60:.1f} min, "
            f"stage `{cfg.stage}`{lora}.",
            "",
            f"## Held-out scores before and after ({cfg.forgetting_samples} records per set)",
            "",
            forgetting.markdown(rows),
            "",
        ]
    )
    plot = f"\n![held-out scores before and after]({forgetting.PLOT_PNG})\n"
    (out / forgetting.SUMMARY_MD).write_text(text + plot)
    (out / CHECKPOINT_DIR / "README.md").write_text(text)
    for line in forgetting.verdict(rows):
        say(line)
    say(f"forgetting report: {out / forgetting.SUMMARY_MD}")


def _save(ckpt, model, head, tokenizer, optimizer, *, step, elapsed, cfg, learnt, rank, world):
    """Checkpoint the model, the training state, what it learnt from and the patch head."""
    if rank == 0:
        info = {"step": step, "elapsed": elapsed, "config": asdict(cfg)}

        def extra(folder: Path) -> None:
            write_training_data(folder, learnt)
            save_train_state(folder, optimizer, info)
            if head is not None:
                aux_losses.save_head(head, folder)

        save_checkpoint(model, ckpt, tokenizer=tokenizer, extra=extra)
        plot_metrics(ckpt.parent / "metrics.jsonl", ckpt.parent / "metrics.png")
    if world > 1:
        dist.barrier()


def _write_config(out: Path, cfg: TrainConfig) -> None:
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))


def _log_metrics(out: Path, row: dict) -> None:
    with (out / "metrics.jsonl").open("a") as handle:
        handle.write(json.dumps(row) + "\n")


def _summary(scores: dict) -> str:
    keys = ["overall", "image", "audio", "both", "caption_attributes"]
    return "  ".join(f"{k} {scores[k]['accuracy']:.3f}" for k in keys if k in scores)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
