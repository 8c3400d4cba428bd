"""The training loop: plain PyTorch, exact resume, one process or DDP."""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn

from anyformer import catalog, rundir
from anyformer.errors import ConfigError, TrainingError, suggest
from anyformer.nn.step_memory import check_run
from anyformer.rng import restore_rng, rng_meta, rng_tensors, seed_everything
from anyformer.runtime import autocast, describe, is_out_of_memory, probe_key, resolve_device, step_probe
from anyformer.tasks import preprocessing
from anyformer.tasks.base import Task
from anyformer.tasks.evaluation import evaluate, model_kwargs
from anyformer.tasks.resolve import model_for_task
from anyformer.train import checkpoint as ckpt
from anyformer.train import distributed as D
from anyformer.train.attention_tracking import tracked_on_eval
from anyformer.train.aux_losses import AuxLosses, expert_usage
from anyformer.train.config import RunConfig, TrainConfig, same_run
from anyformer.train.data import DataCursor, micro_batch_parts
from anyformer.train.logging import RunLogger
from anyformer.train.optim import make_optimizer, make_scheduler

# The prefix of the objective's tensors in state.safetensors.
OBJECTIVE = "objective."


def with_task_defaults(train_cfg: TrainConfig, task) -> TrainConfig:
    """Precedence: TrainConfig defaults < the task's suggestions < fields the user set."""
    mine = train_cfg.model_dump(include=train_cfg.model_fields_set)
    merged = {**task.train_defaults(), **mine}
    if "warmup_steps" not in mine and "steps" in mine:
        # A task's warmup suits its own step count; a shorter run must still reach peak lr.
        merged["warmup_steps"] = min(merged.get("warmup_steps", 0), merged["steps"] // 10)
    return TrainConfig.model_validate(merged)


def resolved_config(run: RunConfig, model_cfg) -> dict[str, Any]:
    return {
        "model": model_cfg.to_dict(),
        "task": run.task.model_dump(mode="json"),
        "train": run.train.model_dump(mode="json"),
    }


class Trainer:
    """Train one run into `out_dir`. `fit()` returns the summary written to summary.json."""

    def __init__(self, run: RunConfig, out_dir: str | Path, resume: bool = False,
                 task: Task | None = None, objective: nn.Module | None = None,
                 on_eval: Callable[[int, dict[str, dict[str, float]]], None] | None = None) -> None:
        """`task`: an already built instance of `run.task` whose data is loaded (compare
        trains many models on one task and loads it once). `objective`: the training loss
        in place of the task's, called as objective(model, batch, output, hidden) (hidden:
        every layer's output) within the step's autocast; its parameters are trained with
        the model's and checkpointed in state.safetensors, so a resume stays exact. What it
        must neither train nor save (a distillation teacher) it keeps out of its submodules.
        `on_eval(step, {split: metrics})` after every evaluation; it may raise to end the run
        (a search prunes a hopeless trial), which then stops without a final checkpoint."""
        self.run, self.cfg, self.out = run, run.train, Path(out_dir)
        self.device = resolve_device(self.cfg.device)
        self.dist = D.init(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.task = task if task is not None else catalog.build_task(run.task)
        run.train = self.cfg = with_task_defaults(run.train, self.task)
        self.splits = self.task.splits()
        self.model_cfg = model_for_task(run.model, self.task)
        self.config_dict = resolved_config(run, self.model_cfg)
        self._check_run_dir(resume)
        if self.cfg.batch_size < self.cfg.grad_accum * self.dist.world:
            raise ConfigError(
                f"train.batch_size {self.cfg.batch_size} is smaller than grad_accum x processes "
                f"({self.cfg.grad_accum} x {self.dist.world}); raise the batch size"
            )
        seed_everything(self.cfg.seed)
        self.model = catalog.create(self.model_cfg).to(self.device)
        # Before any checkpoint is restored, which then overrides it: a resume is exact.
        self.init = self._start_from(self.cfg.init) if self.cfg.init else None
        check_run(self.model, self.cfg.micro_batch(self.dist.world), self.device, optimizer=True,
                  subject=f"train.batch_size={self.cfg.batch_size}", fix="lower train.batch_size or raise train.grad_accum")
        # Evaluation keeps no activations for backward, but its batches may be larger; a
        # split smaller than eval_batch_size is one batch of its own size.
        eval_batch = min(self.cfg.eval_batch_size, max(len(s) for s in self.splits.values()))
        check_run(self.model, eval_batch, self.device, training=False,
                  subject=f"train.eval_batch_size={self.cfg.eval_batch_size}", fix="lower train.eval_batch_size")
        self.precision: str | None = None  # a resumed `auto` run takes its checkpoint's
        self.aux = AuxLosses(self.model)
        self.objective = objective.to(self.device) if objective is not None else None
        # The model's parameters first, so a run without an objective is unchanged.
        self.trained = nn.ModuleList([self.model, self.objective]) if self.objective is not None else self.model
        self.optimizer = make_optimizer(self.trained, self.cfg)
        self.scheduler = make_scheduler(self.optimizer, self.cfg)
        self.step, self.skipped, self.best, self.best_step, self.bad_evals = 0, 0, None, None, 0
        self.elapsed_before = 0.0
        self.saved_step: int | None = None  # the step of the last checkpoint on disk
        self.window: list[float] = []  # losses since the last logged step
        self.cursor = DataCursor(len(self.splits["train"]), self.cfg.seed)
        self.metric = self.cfg.metric or self.task.primary_metric
        self.higher = self.task.higher_is_better if self.cfg.metric is None else self.task.strategy.higher_is_better(self.metric)
        self.logger = RunLogger(self.out, enabled=self.dist.is_main, progress=self.cfg.progress, total=self.cfg.steps)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            rundir.atomic_write_text(self.out / "config.yaml", yaml.safe_dump(self.config_dict, sort_keys=False))
            preprocessing.save(self.task, self.out)  # what predict needs to read raw inputs as training did
        if not (resume and self._restore()) and self.dist.is_main:
            # Starting from step 0 in a directory a killed run left before its first
            # checkpoint: its metrics lines and best weights belong to no checkpoint.
            self.logger.truncate(0)
            (self.out / "best.safetensors").unlink(missing_ok=True)
        if self.precision is None:  # not resumed in the precision it started in: decide now
            self._decide_precision()
        self.on_eval = tracked_on_eval(self, on_eval)  # after the restore: step 0 only when fresh
        self.train_model = self.model
        if self.cfg.compile:
            self.train_model = torch.compile(self.model)
        if self.dist.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _decide_precision(self) -> None:
        """Resolved once per run: `auto` times this model's own step on a real micro-batch in
        fp32 and bf16 (nothing of the run changes). Every process must train in the same
        precision, so bf16 only where all of them chose it."""
        size = max(1, min(len(self.splits["train"]), self.cfg.batch_size // (self.cfg.grad_accum * self.dist.world)))
        batch = self.splits["train"].batch(torch.arange(size)).to(self.device)
        step = step_probe(self.model, lambda: self.task.loss(self.model(batch.inputs, **model_kwargs(batch)).float(), batch.target),
                          self.device)
        self.precision_info = describe(self.device, self.cfg.precision, step, probe_key(self.model, size))
        self.precision = self.precision_info["precision"]
        if self.cfg.precision == "auto" and not D.all_true(self.precision == "bf16", self.dist):
            self.precision = "fp32"
            self.precision_info["reason"] = "fp32: not every process measured bf16 faster"

    # ------------------------------------------------------------ run directory
    def _start_from(self, source: str) -> dict[str, Any]:
        """Load train.init's matching tensors; what was loaded and what starts fresh."""
        loaded, fresh = rundir.load_matching_weights(self.model, source)
        return {"from": str(rundir.weights_path(source)), "loaded": len(loaded), "fresh": fresh}

    def _check_run_dir(self, resume: bool) -> None:
        if not self.out.exists():
            return
        rundir.recover(self.out)
        if (self.out / "summary.json").exists() and not resume:
            raise ConfigError(f"{self.out} holds a finished run; choose another --out (its results are kept)")
        if (self.out / "state.json").exists() and not resume:
            raise ConfigError(f"{self.out} holds a checkpoint; pass --resume to continue it or choose another --out")
        if resume and (self.out / "config.yaml").exists():
            old = rundir.read_config(self.out)
            if not same_run(old, self.config_dict):
                raise ConfigError(f"the config differs from the one {self.out} was started with; resume with the same config or choose another --out")

    def _restore(self) -> bool:
        """Load the last committed checkpoint; False when there is none (start from scratch)."""
        found = rundir.read_checkpoint(self.out)
        if found is None:
            return False
        tensors, meta = found
        rundir.load_weights(self.model, self.out / "model.safetensors")
        self._restore_objective(tensors, meta)
        opt_state = ckpt.unflatten_optimizer(tensors, meta["optimizer"])
        self.optimizer.load_state_dict(opt_state)
        self.scheduler.load_state_dict(meta["scheduler"])
        self.step, self.skipped = meta["step"], meta["skipped"]
        self.best, self.best_step, self.bad_evals = meta["best"], meta["best_step"], meta["bad_evals"]
        self.elapsed_before = meta["elapsed"]
        self.saved_step = meta["step"]
        self.window = list(meta.get("loss_window", []))
        self.cursor = DataCursor(len(self.splits["train"]), self.cfg.seed, **meta["data"])
        self.logger.truncate(meta["metrics_bytes"])
        restore_rng(tensors, meta)
        if self.cfg.precision == "auto":
            # Go on in the precision the run started in, whatever the probe says now, so a
            # resumed run ends as an uninterrupted one (checkpoints from before the probe
            # ran `auto` as bf16 on CUDA and fp32 on CPU).
            self.precision = meta.get("precision", "bf16" if self.device.type == "cuda" else "fp32")
            self.precision_info = {"precision": self.precision,
                                   "reason": f"resumed in the precision the run started in ({self.precision})"}
        return True

    def _restore_objective(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        mine = type(self.objective).__name__ if self.objective is not None else None
        if meta.get("objective") != mine:
            raise ConfigError(f"{self.out} was trained with objective {meta.get('objective')!r}, not {mine!r}; "
                              "resume it as it was started or choose another --out")
        if self.objective is not None:
            self.objective.load_state_dict({k[len(OBJECTIVE):]: v.to(self.device) for k, v in tensors.items()
                                            if k.startswith(OBJECTIVE)})

    def _checkpoint(self, elapsed: float) -> None:
        if not self.dist.is_main:
            return
        opt_tensors, opt_meta = ckpt.flatten_optimizer(self.optimizer.state_dict())
        if self.objective is not None:
            opt_tensors.update({OBJECTIVE + k: v.detach().cpu().contiguous() for k, v in self.objective.state_dict().items()})
        meta = {
            "step": self.step, "skipped": self.skipped, "best": self.best, "best_step": self.best_step,
            "bad_evals": self.bad_evals, "elapsed": elapsed, "data": self.cursor.state(),
            "scheduler": self.scheduler.state_dict(), "optimizer": opt_meta,
            "metrics_bytes": self.logger.size(), "loss_window": self.window, "precision": self.precision, **rng_meta(),
            **({"objective": type(self.objective).__name__} if self.objective is not None else {}),
        }
        rundir.write_checkpoint(self.out, self.model, {**opt_tensors, **rng_tensors()}, meta)
        self.saved_step = self.step

    # ------------------------------------------------------------ training
    def _set_progress(self) -> None:
        fraction = self.step / self.cfg.steps
        for m in self.model.modules():
            hook = getattr(m, "set_progress", None)
            if callable(hook):
                hook(fraction)

    def _train_step(self) -> float | None:
        """One optimizer step over the global batch; None when the batch was skipped."""
        cfg, world, rank = self.cfg, self.dist.world, self.dist.rank
        indices = self.cursor.take(cfg.batch_size)
        parts = micro_batch_parts(indices, cfg.grad_accum, world, rank)
        # Summed on the device and read once per step: one host sync, not two per micro-batch.
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        self._set_progress()
        for i, part in enumerate(parts):
            batch = self.splits["train"].batch(part).to(self.device)
            sync = i == len(parts) - 1 or not self.dist.enabled
            ctx = self.train_model.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                with autocast(self.device, self.precision):
                    if self.objective is None:
                        out = self.train_model(batch.inputs, **model_kwargs(batch))
                    else:  # in the step's precision, as the model (a teacher, projectors)
                        out, hidden = self.train_model(batch.inputs, **model_kwargs(batch), return_hidden=True)
                        loss = self.objective(self.model, batch, out, hidden)
                if self.objective is None:
                    loss = self.task.loss(out.float(), batch.target)
                loss = loss + self.aux.pop()
                finite = finite & torch.isfinite(loss.detach())
                weight = world * len(part) / cfg.batch_size
                (loss * weight).backward()
            total = total + loss.detach().double() * (len(part) / cfg.batch_size)
        stats = torch.stack([total, finite.double()]).cpu()
        total, finite = float(stats[0]), bool(stats[1])
        if not D.all_true(finite, self.dist):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.dist.enabled:
            t = torch.tensor([total], dtype=torch.float64)
            torch.distributed.all_reduce(t)
            total = float(t.item())
            # DDP averages the model's gradients; the objective's are averaged here.
            for p in self.objective.parameters() if self.objective is not None else ():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= world
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.trained.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def _evaluate_all(self) -> dict[str, dict[str, float]]:
        return {s: evaluate(self.model, self.task, s, self.cfg.eval_batch_size, self.device, self.precision)
                for s in self.task.eval_splits()}

    def _after_eval(self, results: dict[str, dict[str, float]]) -> bool:
        """Track the best val metric; True when early stopping says stop."""
        val = results.get("val", {})
        if val and self.metric not in val:
            raise ConfigError(f"train.metric {self.metric!r} is not a metric of task {self.task.name!r}"
                              f"{suggest(self.metric, val)}; valid: {', '.join(sorted(val))}")
        value = val.get(self.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        improved = self.best is None or (value > self.best if self.higher else value < self.best)
        if improved:
            self.best, self.best_step, self.bad_evals = value, self.step, 0
            if self.cfg.early_stopping and self.dist.is_main:
                rundir.save_weights(self.model, self.out / "best.safetensors", {"step": str(self.step)})
            return False
        self.bad_evals += 1
        return bool(self.cfg.early_stopping and self.bad_evals >= self.cfg.early_stopping)

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        ckpt_every = cfg.checkpoint_every or cfg.eval_every
        start = time.perf_counter()
        elapsed = lambda: self.elapsed_before + time.perf_counter() - start  # noqa: E731
        stopped, last_eval = "steps", None
        # A checkpoint at least every checkpoint_every_s too: a kill loses bounded time, however
        # slow a step is (compare's seeds run long with no eval in between).
        saved_at = time.perf_counter()
        self.trained.train()
        if self.logger.show:
            self.logger.console.print(f"precision {self.precision} on {self.device}: {self.precision_info['reason']}")
        with self.logger:
            self.logger.advance(self.step)
            while self.step < cfg.steps:
                # Every process must take the same stop decision, or the others hang in all_reduce.
                if cfg.max_time is not None and not D.all_true(elapsed() < cfg.max_time, self.dist):
                    stopped = "max_time"
                    break
                try:
                    loss = self._train_step()
                except (RuntimeError, MemoryError) as err:
                    if not is_out_of_memory(err):
                        raise
                    raise TrainingError(
                        f"out of memory at step {self.step + 1} with batch {cfg.batch_size} on {self.device}; lower "
                        f"train.batch_size or raise train.grad_accum (the last checkpoint is kept in {self.out})"
                    ) from None
                if loss is None:
                    self.skipped += 1
                    if self.skipped > cfg.skip_nonfinite:
                        raise TrainingError(self._nonfinite_message())
                    continue
                self.step += 1
                self.window.append(loss)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    record = {"step": self.step, "loss": sum(self.window) / len(self.window), "lr": self.scheduler.get_last_lr()[0]}
                    if self.step == min(cfg.log_every, cfg.steps):  # the run's first record says its precision
                        record["precision"] = self.precision
                    usage = expert_usage(self.model)
                    if usage:
                        record["expert_usage"] = usage
                    self.logger.log(record)
                    self.window = []
                self.logger.advance(self.step, loss=loss)
                stop = False
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    last_eval = (self.step, self._evaluate_all())
                    for split, metrics in last_eval[1].items():
                        self.logger.log({"step": self.step, "split": split, **metrics})
                    self.logger.advance(self.step, metric=last_eval[1].get("val", {}).get(self.metric))
                    stop = not D.all_true(not self._after_eval(last_eval[1]), self.dist)
                    if self.on_eval is not None:
                        self.on_eval(self.step, last_eval[1])
                overdue = cfg.checkpoint_every_s is not None and time.perf_counter() - saved_at >= cfg.checkpoint_every_s
                if self.step % ckpt_every == 0 or self.step == cfg.steps or stop or overdue:
                    self._checkpoint(elapsed())
                    saved_at = time.perf_counter()
                if stop:
                    stopped = "early_stopping"
                    break
        return self._finish(stopped, last_eval, elapsed())

    def _nonfinite_message(self) -> str:
        # The advice must work as given: --skip-nonfinite is no part of the run's identity
        # (train.config.EXECUTION_FIELDS), so --resume accepts it.
        allowed = self.cfg.skip_nonfinite
        what = (f"non-finite loss at step {self.step + 1}"
                + (f" after skipping {allowed} bad batch{'es' if allowed != 1 else ''}" if allowed else ""))
        fixes = "lower train.lr or set train.grad_clip and train again in a new --out"
        if self.saved_step is None:
            return f"{what}, before the first checkpoint (nothing was saved); {fixes}, or pass --skip-nonfinite N"
        return (f"{what}; the checkpoint of step {self.saved_step} is kept in {self.out}: continue it with "
                f"--resume --skip-nonfinite {max(2 * allowed, 10)} (skips up to that many bad batches), or {fixes}")

    def _finish(self, stopped: str, last_eval, elapsed: float) -> dict[str, Any]:
        if self.cfg.early_stopping and (self.out / "best.safetensors").exists():
            rundir.load_weights(self.model, self.out / "best.safetensors")
            last_eval = None
        if last_eval is None or last_eval[0] != self.step:
            final = self._evaluate_all()
        else:
            final = last_eval[1]
        summary = {
            "task": self.task.name, "steps": self.step, "stopped": stopped, "skipped_batches": self.skipped,
            "metric": self.metric, "higher_is_better": self.higher, "best_val": self.best, "best_step": self.best_step,
            "final": final, "train_seconds": round(elapsed, 3),
            "parameters": sum(p.numel() for p in self.model.parameters()), "precision": self.precision,
        }
        if self.init is not None:
            summary["init"] = self.init
        if self.dist.is_main:
            self._checkpoint(elapsed)
            rundir.atomic_write_json(self.out / "summary.json", summary)
        D.barrier(self.dist)
        return summary


def train(run: RunConfig, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    trainer = Trainer(run, out_dir, resume)
    try:
        return trainer.fit()
    finally:
        D.shutdown(trainer.dist)
