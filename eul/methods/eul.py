"""Efficient Unlearning Layers (Chen & Yang, EMNLP 2023): one small layer per request.

The base model stays frozen. A fresh unlearning layer is trained with a selective
teacher-student objective, alternating an epoch over forget batches with an epoch over a
sample of retained batches. The teacher is the same model with the new layer switched off.

Objectives (`EULConfig.objective`):
- `paper`: alpha KL on retained + task loss on retained - bounded KL on forget
  - gamma bounded masked-LM loss on forget, as the paper states it.
- `unlikelihood`: the retained terms of `paper`, and on forget content tokens -log(1 - q) of
  the answer's share (labelled rows) or, per token, the log-odds log p - log(1 - p).
- `npo`: the retained terms of `paper`, and negative preference optimisation on forget.
- `task_only`: the task loss on retained data alone (a reference for cost, forgets nothing).

Forget terms are gated per content token: a token is pushed only while the model still
predicts it with probability above `threshold` (0.5: "no longer the likely answer"), or
above the median probability of content tokens in held-out rows when that is lower (long
free-text targets, where even a memorised token may sit below 0.5). That aims at the
oracle-like level, where a memorised answer is no longer produced, not at zero probability;
once all but `stop_share` (5%) of the forget tokens are below it, training stops. The
retained epochs in between restore what the retained data supports, so forget rows whose
answer follows from the rest of the data stay answered (as they would be by a model that
never saw them).
`reference="auto"` (the default) is `probe` where every row is labelled, else `threshold`.
With `reference="probe"` (labelled data) each forget row gets a level of its own, from a
bag-of-tokens probe fitted on the retained rows and calibrated on held-out ones
(`eul.methods.reference`). A row whose label the probe also gives (its top answer) follows from its
words: it is only made as unsure as an unseen row, and with the unlikelihood objective pulled
back while its label's share is under `probe_hold` (0.7), since a subject's odd and ordinary
rows share its words and pushing the odd ones away moves the ordinary ones along. Any other
row carries an odd label that only memorising reproduces: it is pushed to the probe's
probability divided by `probe_margin` (4), at least `probe_floor` (0.05), which leaves room
for later layers to move it before the memorised answer comes back. Rows are measured by
their label's share of the answers (the label words), the way `TextModel.choose` ranks them:
pushed over the whole vocabulary, probability can go to tokens no answer starts with and
leave the memorised answer still the one chosen.
With `push_while_top` a token is also pushed while it is still the most likely next token:
with a vocabulary-sized output a memorised secret can sit below one half and still be what
greedy decoding writes (generation tasks).
Free text (threshold reference) has three more rules, measured together (docs/method.md): with
`token_levels` each token's level is what unseen rows give that token, where they hold it
often enough, and only tokens no unseen row shows (a planted secret) are pushed to the single
level and, with `push_while_top`, while ranked first; with `row_levels` a row whose mean
content log-probability is still above the median unseen row's has all its content tokens
pushed (tokens each at their level can still, together, make a member); and the forget rows
get enough passes per epoch for `forget_step_share` of the retained steps. The forget term on
tokens is the log-odds, whose gradient does not fade where a weak model's memorised token
sits at p = 0.003.
`reference="none"` removes the gate, as the paper has it.

A request's layer can be held to no output on earlier requests' forget tokens
(`ForgetTask.keep`, `keep_weight`): stacked on top of their layers, it then does not bring
them back, which training against the retained data alone does.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

import eul.methods.objectives as objectives
from eul.data.records import Record
from eul.layers import LayerConfig, UnlearningModel
from eul.methods.base import (
    ForgetTask,
    Unlearned,
    UnlearningMethod,
    UnlearnResult,
    register_method,
)
from eul.methods.levels import probe_levels, resolve_reference, token_level_table
from eul.methods.loop import Stepper, TeacherCache, batches
from eul.model.text_model import IGNORE, TextModel
from eul.model.training import linear_schedule, seed_everything

OBJECTIVES = ("paper", "unlikelihood", "npo", "task_only")
REFERENCES = ("auto", "threshold", "probe", "none")


@dataclass(frozen=True)
class EULConfig:
    """Knobs of one EUL update. The paper's defaults are alpha 0.8, lambda 1.0, gamma 0.2.

    alpha is 4.0 here: with the unlikelihood forget term, the benchmark measured the
    paper's 0.8 costing retained accuracy, and 4.0 kept it closer to the oracle's
    (`eul bench --variants` reports both). The learning rate is that of a freshly
    initialised layer on a small model; the paper's 5e-5 is for t5-base.
    """

    objective: str = "unlikelihood"
    reference: str = "auto"
    threshold: float = 0.5
    probe_floor: float = 0.05
    probe_margin: float = 4.0
    probe_hold: float = 0.7
    alpha: float = 4.0
    lam: float = 1.0
    gamma: float = 0.2
    forget_weight: float = 1.0
    kl_bound: float = 5.0
    lm_bound: float = 5.0
    npo_beta: float = 0.5
    lr: float = 2e-3
    epochs: int = 16
    batch_size: int = 32
    forget_batch_size: int = 8
    retained_sample: int = 1000
    retained_per_epoch: int = 768
    warmup_share: float = 0.06
    teacher_top_k: int = 8
    unseen_sample: int = 500
    stop_share: float = 0.05
    stop_tolerance: float = 0.1
    push_while_top: bool = False
    token_levels: bool = True
    token_level_count: int = 3
    row_levels: bool = True
    forget_step_share: float = 0.25
    keep_weight: float = 1.0
    layer: LayerConfig = field(default_factory=LayerConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.probe_margin < 1.0:
            raise ValueError(f"probe_margin must be at least 1, got {self.probe_margin}")
        if not 0.0 <= self.probe_hold < 1.0:
            raise ValueError(f"probe_hold must lie in [0, 1), got {self.probe_hold}")
        if not 0.0 <= self.forget_step_share <= 1.0:
            raise ValueError(f"forget_step_share must lie in [0, 1], got {self.forget_step_share}")
        if self.epochs < 1 or self.retained_sample < 1:
            raise ValueError("epochs and retained_sample must be at least 1")


@register_method("eul")
class EUL(UnlearningMethod):
    """Train one unlearning layer for one forget request."""

    # the base stays frozen: the new layer is added to the model passed in, where callers
    # save it from (`UnlearningModel.save_layer`)
    copies_model = False

    def __init__(self, config: EULConfig | None = None, **overrides: object) -> None:
        base = config or EULConfig()
        self.config = EULConfig(**{**base.__dict__, **overrides}) if overrides else base
        # the reference a run uses: "auto" resolved against that run's rows
        self.reference = self.config.reference

    def run(
        self,
        original: TextModel,
        task: ForgetTask,
        progress: bool = True,
        max_steps: int | None = None,
        on_epoch: Callable[[int, TextModel], None] | None = None,
    ) -> UnlearnResult:
        """Train a layer named `task.name` and add it to `original`, whose base weights stay
        frozen and untouched; `on_epoch(epoch, model)` is called after every epoch."""
        return self.timed(
            original, lambda tm: self.unlearn(tm, task, progress, max_steps, on_epoch)
        )

    def unlearn(
        self,
        tm: TextModel,
        task: ForgetTask,
        progress: bool,
        max_steps: int | None,
        on_epoch: Callable[[int, TextModel], None] | None = None,
    ) -> Unlearned:
        cfg = self.config
        seed_everything(cfg.seed)
        rng = random.Random(cfg.seed)
        forget = list(task.forget)
        retained = rng.sample(list(task.retained), min(cfg.retained_sample, len(task.retained)))
        self.reference = resolve_reference(cfg.reference, forget, retained)
        self._measure_references(tm, task, forget, retained)
        keep = self._keep_on_device(tm, task)
        name = task.name
        layers = tm.unlearning_layers()
        layers.add_layer(name, cfg.layer)
        layers.set_active([*layers.active, name])
        per_epoch = min(cfg.retained_per_epoch, len(retained))
        stepper = self._stepper(layers, name, len(forget), per_epoch, keep, max_steps, progress)
        history = self._train(tm, name, forget, retained, per_epoch, rng, stepper, on_epoch)
        tm.model.eval()
        return Unlearned(
            model=tm,
            trainable_share=layers.parameter_share(name),
            history=history,
            layer_name=name,
        )

    # -- steps of a run -----------------------------------------------------------------

    def _measure_references(
        self, tm: TextModel, task: ForgetTask, forget: list[Record], retained: list[Record]
    ) -> None:
        """What training compares with, measured once on the model before the new layer: the
        teacher's top-k on the retained sample, the answers, the unseen and per-row levels."""
        cfg = self.config
        cache_k = 0 if cfg.objective == "task_only" else cfg.teacher_top_k
        self._cache = TeacherCache(tm, retained, cache_k, cfg.batch_size)
        self._options = self._label_options(forget, retained)
        self._free_text = bool(forget) and all(r.label is None for r in forget)
        self._unseen_level = self._measure_unseen_level(tm, list(task.heldout))
        self._row_levels = self._probe_levels(tm, forget, list(task.retained), task.heldout)

    def _keep_on_device(self, tm: TextModel, task: ForgetTask) -> dict[str, torch.Tensor] | None:
        """`task.keep`, checked against the layer's basis and put where the model is."""
        if task.keep is not None and not self.config.layer.shared_basis:
            raise ValueError(
                "ForgetTask.keep holds shared-basis feature statistics; this layer trains its "
                "own basis (basis='trained'): leave keep out or use basis='shared'"
            )
        # the Grams come from CPU statistics: moved once, not at every step
        return None if task.keep is None else {p: g.to(tm.device) for p, g in task.keep.items()}

    def _stepper(
        self,
        layers: UnlearningModel,
        name: str,
        n_forget: int,
        per_epoch: int,
        keep: Mapping[str, torch.Tensor] | None,
        max_steps: int | None,
        progress: bool,
    ) -> Stepper:
        """The optimiser, schedule and progress bar of the new layer `name`."""
        cfg = self.config
        params = layers.layer_parameters(name)
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        forget_steps = self._forget_passes(n_forget, per_epoch) * math.ceil(
            n_forget / cfg.forget_batch_size
        )
        steps_per_epoch = forget_steps + math.ceil(per_epoch / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        scheduler = linear_schedule(optimizer, total, cfg.warmup_share)
        bar = tqdm(total=total, desc=f"unlearn {name}", disable=not progress, leave=False)

        def keep_penalty() -> torch.Tensor:
            return cfg.keep_weight * self._keep_penalty(layers, name, keep or {})

        holds = keep is not None and cfg.keep_weight > 0
        return Stepper(
            params, optimizer, scheduler, bar, max_steps, keep_penalty if holds else None
        )

    def _train(
        self,
        tm: TextModel,
        name: str,
        forget: list[Record],
        retained: list[Record],
        per_epoch: int,
        rng: random.Random,
        stepper: Stepper,
        on_epoch: Callable[[int, TextModel], None] | None,
    ) -> list[dict[str, float]]:
        """Epochs until the forget tokens are below their level, `epochs` or `max_steps`."""
        cfg = self.config
        history: list[dict[str, float]] = []
        for epoch in range(cfg.epochs):
            row = self._epoch(tm, name, forget, retained, per_epoch, epoch, rng, stepper)
            history.append(row)
            above = row["share_above_level"]
            stepper.bar.set_postfix(epoch=epoch + 1, above=f"{above:.2f}")
            if on_epoch is not None:
                on_epoch(epoch + 1, tm)
            if stepper.out_of_steps:
                break
            gated = self.reference != "none" and cfg.objective != "task_only"
            if gated and above <= cfg.stop_share:
                break
        stepper.bar.close()
        return history

    def _epoch(
        self,
        tm: TextModel,
        name: str,
        forget: list[Record],
        retained: list[Record],
        per_epoch: int,
        epoch: int,
        rng: random.Random,
        stepper: Stepper,
    ) -> dict[str, float]:
        """One epoch over the forget batches, then one over a window of the retained sample."""
        cfg = self.config
        tm.model.train()
        forget_losses, retained_losses = [], []
        passes = self._forget_passes(len(forget), per_epoch)
        if cfg.objective != "task_only":
            chunks = [c for _ in range(passes) for c in batches(forget, cfg.forget_batch_size, rng)]
            for chunk in chunks:
                loss = self._forget_loss(tm, name, chunk, rng)
                if loss.requires_grad:
                    stepper.step(loss)
                forget_losses.append(loss.item())
                if stepper.out_of_steps:
                    break
        offset = (epoch * per_epoch) % len(retained)
        window = (retained + retained)[offset : offset + per_epoch]
        for chunk in batches(window, cfg.batch_size, rng):
            if stepper.out_of_steps:
                break
            loss = self._retained_loss(tm, name, chunk)
            stepper.step(loss)
            retained_losses.append(loss.item())
        return {
            "epoch": epoch + 1,
            "forget_loss": sum(forget_losses) / max(1, len(forget_losses)),
            "retained_loss": sum(retained_losses) / max(1, len(retained_losses)),
            "share_above_level": self._share_above_level(tm, forget),
        }

    # -- pieces -------------------------------------------------------------------------

    def _forget_passes(self, n_forget: int, per_epoch: int) -> int:
        """Passes over the forget rows per epoch (free text): enough that their steps are at
        least `forget_step_share` of the retained steps after them; labelled rows take one.

        AdamW moves the layer about one learning rate per step whatever the loss's scale, so
        13 summaries (2 forget steps against 24 retained ones) were pulled back by the
        retained epoch faster than they were pushed, and a weighted loss changed nothing.
        Labelled rows, measured among the answers, reached their levels in one pass.
        """
        cfg = self.config
        if not getattr(self, "_free_text", False):
            return 1
        forget_steps = max(1, math.ceil(n_forget / cfg.forget_batch_size))
        retained_steps = math.ceil(per_epoch / cfg.batch_size)
        return max(1, math.ceil(cfg.forget_step_share * retained_steps / forget_steps))

    @property
    def level(self) -> float:
        """Log-probability below which a forget token counts as forgotten."""
        if self.reference == "none":
            return -math.inf
        return min(math.log(self.config.threshold), getattr(self, "_unseen_level", 0.0))

    def _levels(self, rows: list[Record], device: torch.device) -> torch.Tensor:
        """[rows, 1]: the level of each row's tokens (one level for all without a probe)."""
        levels = getattr(self, "_row_levels", None)
        values = [levels[r.record_id] if levels else self.level for r in rows]
        return torch.tensor(values, dtype=torch.float32, device=device)[:, None]

    def _token_levels_of(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """With per-token levels (free text): each target token's level, [rows, T], and
        whether the held-out rows gave that token one ([rows, T] bool); else None."""
        table = getattr(self, "_token_table", None)
        if table is None:
            return None
        ids = labels.clamp(min=0).cpu()
        levels, known = table[0][ids], table[1][ids]
        return levels.to(labels.device), known.to(labels.device)

    def _label_options(self, forget: list[Record], retained: list[Record]) -> list[str] | None:
        """With `reference="probe"`, the answer of each label: forget rows are then measured
        and pushed by their label's probability among the answers, the way `choose` ranks
        them, not among the whole vocabulary (where pushed mass can land on tokens no answer
        starts with and leave the memorised answer still the chosen one)."""
        if self.reference != "probe":
            return None
        from eul.methods.reference import label_options

        return label_options([*forget, *retained])

    def _answer_logprobs(self, tm: TextModel, rows: Sequence[Record]) -> torch.Tensor:
        """[rows]: log-probability of each row's label among the answers (`_options`)."""
        scores = tm.option_scores([r.text for r in rows], self._options)
        labels = torch.tensor([int(r.label) for r in rows], device=scores.device)
        return torch.log_softmax(scores.float(), -1).gather(1, labels[:, None]).squeeze(1)

    @torch.no_grad()
    def _measured_answer_logprobs(
        self, tm: TextModel, rows: Sequence[Record], batch_size: int = 128
    ) -> list[float]:
        tm.model.eval()
        values: list[float] = []
        for start in range(0, len(rows), batch_size):
            values.extend(self._answer_logprobs(tm, rows[start : start + batch_size]).tolist())
        return values

    def _probe_levels(
        self,
        tm: TextModel,
        forget: list[Record],
        retained: list[Record],
        heldout: Sequence[Record] = (),
    ) -> dict[str, float] | None:
        """With `reference="probe"`, per forget row: for a row whose label the retained data
        alone also gives (the probe's top answer, `eul.methods.reference`), the unseen rows' level;
        for any other row, the probe's probability of its label divided by `probe_margin`,
        floored at `probe_floor` (never above the unseen rows' level)."""
        if self.reference != "probe":
            return None
        levels, self._supported = probe_levels(
            tm.tokenizer, forget, retained, heldout, self._unseen_level,
            self.config.probe_floor, self.config.probe_margin,
        )  # fmt: skip
        return levels

    @torch.no_grad()
    def _measure_unseen_level(self, tm: TextModel, heldout: list[Record]) -> float:
        """Median log-probability of content tokens of rows the model never saw.

        Where the model is unsure of unseen rows (long free-text targets), a memorised row
        stands out by being more likely than that, not by passing 0.5: forget tokens are then
        pushed down to what unseen rows get.
        """
        rows = heldout[: self.config.unseen_sample]
        self._token_table = None
        self._row_level = None
        if getattr(self, "_options", None) is not None:
            rows = [r for r in rows if r.label is not None]
            values = sorted(self._measured_answer_logprobs(tm, rows))
            return values[len(values) // 2] if values else 0.0
        tokens = tm.content_tokens(rows) if rows else []
        values = sorted(v for _, row in tokens for v in row)
        median = values[len(values) // 2] if values else 0.0
        free_text = getattr(self, "_free_text", False) and bool(rows)
        if self.reference == "threshold" and self.config.row_levels and free_text:
            means = sorted(sum(row) / len(row) for _, row in tokens if row)
            self._row_level = means[len(means) // 2] if means else None
        if self.reference == "threshold" and self.config.token_levels and free_text:
            fallback = min(math.log(self.config.threshold), median)
            self._token_table = token_level_table(
                tokens, len(tm.tokenizer), fallback, self.config.token_level_count
            )
        return median

    def _teacher_logits(self, tm: TextModel, name: str, batch: dict) -> torch.Tensor:
        layers = tm.unlearning_layers()
        with torch.no_grad(), layers.disabled(name):
            return tm.logits(batch)

    def _retained_loss(self, tm: TextModel, name: str, chunk: list[Record]) -> torch.Tensor:
        cfg = self.config
        batch = tm.batch([r.text for r in chunk], [r.target for r in chunk])
        student = tm.logits(batch)
        task = torch.nn.functional.cross_entropy(
            student.reshape(-1, student.size(-1)), batch["labels"].reshape(-1), ignore_index=IGNORE
        )
        if cfg.objective == "task_only":
            return cfg.lam * task
        cached = self._cache.lookup(chunk, batch["labels"])
        if cached is not None:
            kl = objectives.topk_kl_to_teacher(*cached, student, batch["labels"])
        else:
            teacher = self._teacher_logits(tm, name, batch)
            kl = objectives.kl_to_teacher(teacher, student, batch["labels"])
        return cfg.alpha * kl + cfg.lam * task

    def _forget_loss(
        self,
        tm: TextModel,
        name: str,
        chunk: list[Record],
        rng: random.Random,
    ) -> torch.Tensor:
        cfg = self.config
        if getattr(self, "_options", None) is not None and cfg.objective == "unlikelihood":
            supported = [r.record_id in self._supported for r in chunk]
            return cfg.forget_weight * objectives.answer_unlikelihood(
                self._answer_logprobs(tm, chunk),
                self._levels(chunk, tm.device)[:, 0],
                torch.tensor(supported, device=tm.device),
                cfg.probe_hold,
            )
        batch = tm.batch([r.text for r in chunk], [r.target for r in chunk])
        student = tm.logits(batch)
        labels = batch["labels"]
        logp = torch.log_softmax(student.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1))
        logp = logp.squeeze(-1).masked_fill(labels == IGNORE, 0.0)
        per_token = self._token_levels_of(labels)
        if per_token is None:
            levels = self._levels(chunk, tm.device)
            gate = objectives.forget_gate(
                student, labels, logp, batch["content_mask"], levels, cfg.push_while_top
            )
        else:
            # a token unseen rows also give its level is not pushed past it, even while
            # ranked first; only tokens they never showed are pushed while first
            levels, known = per_token
            mask = batch["content_mask"]
            gate = objectives.forget_gate(student, labels, logp, mask & known, levels, False)
            gate = gate | objectives.forget_gate(
                student, labels, logp, mask & ~known, levels, cfg.push_while_top
            )
        gate = gate | self._rows_above(logp, batch["content_mask"])
        if not gate.any():
            return logp.sum() * 0.0
        if cfg.objective == "unlikelihood":
            return cfg.forget_weight * objectives.unlikelihood(logp, gate)
        teacher = self._teacher_logits(tm, name, batch)
        if cfg.objective == "npo":
            teacher_logp = (
                torch.log_softmax(teacher.float(), -1)
                .gather(-1, labels.clamp(min=0).unsqueeze(-1))
                .squeeze(-1)
            )
            return cfg.forget_weight * objectives.npo(logp, teacher_logp, gate, cfg.npo_beta)
        loss = objectives.bounded_negative_kl(teacher, student, gate, cfg.kl_bound)
        lm_batch = objectives.span_corrupt(tm, [r.text for r in chunk], rng)
        if lm_batch is not None and cfg.gamma > 0:
            lm = tm.task_loss(lm_batch).clamp(max=cfg.lm_bound)
            loss = loss - cfg.gamma * lm
        return loss

    @staticmethod
    def _keep_penalty(layers, name: str, keep: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean squared output per hidden dimension of the new layer on earlier forget tokens.

        With a shared basis the layer's output is features @ U, so over tokens whose mean
        feature Gram is G this is trace(U^T G U) / d: exact, and no earlier text is needed.
        """
        total = torch.zeros((), device=next(layers.layers[name].parameters()).device)
        for position, gram in keep.items():
            layer = layers.layers[name][position]
            up = torch.cat([layer.up.weight.T, layer.up.bias[None]])
            total = total + (up * (gram.to(up) @ up)).sum() / up.shape[1]
        return total

    def _rows_above(self, logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """With row levels (free text): every content token of a row whose mean content
        log-probability is still above what the median unseen row gets ([rows, T] bools).

        The tokens of a memorised summary can each sit below their level and still be,
        together, likelier than an unseen row's: the row then still looks like a member.
        """
        level = getattr(self, "_row_level", None)
        if level is None:
            return torch.zeros_like(mask)
        weight = mask.to(logp.dtype)
        mean = (logp.detach() * weight).sum(-1) / weight.sum(-1).clamp(min=1.0)
        return mask & (mean > level)[:, None]

    @torch.no_grad()
    def _share_above_level(self, tm: TextModel, forget: list[Record]) -> float:
        """Share of forget content tokens (of rows, where they are measured among the
        answers) still more likely than the level allows; with row levels, every token of a
        row still likelier than the median unseen row counts as above."""
        tolerance = self.config.stop_tolerance
        levels = self._levels(forget, torch.device("cpu"))[:, 0].tolist()
        if getattr(self, "_options", None) is not None:
            scores = self._measured_answer_logprobs(tm, forget)
            above = [v > lv + tolerance for v, lv in zip(scores, levels, strict=True)]
            return sum(above) / len(above) if above else 0.0
        table = getattr(self, "_token_table", None)
        row_level = getattr(self, "_row_level", None)
        above = []
        for (ids, values), level in zip(tm.content_tokens(forget), levels, strict=True):
            row_above = (
                row_level is not None and bool(values)
                and sum(values) / len(values) > row_level + tolerance
            )  # fmt: skip
            for i, v in zip(ids, values, strict=True):
                own = float(table[0][i]) if table is not None else level
                above.append(row_above or v > own + tolerance)
        return sum(above) / len(above) if above else 0.0
