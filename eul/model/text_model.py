"""Text-to-text models: a small T5 built from a config, any local Hugging Face checkpoint.

Everything the unlearning methods need from a model goes through `TextModel`: batching
records, per-token log-probabilities of the target, and greedy generation. Encoder-decoder
(T5) and decoder-only (GPT-2, Llama) checkpoints are handled the same way from outside.

A model runs where its weights are (`TextModel.to`, `eul.model.device.resolve_device`): every
batch it builds is put there, and what it returns to Python (scores, choices, texts) comes back
to the CPU. Full training lives in `eul.model.training`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

from eul.data.records import Record
from eul.layers import UnlearningModel
from eul.model.device import resolve_device
from eul.model.tokenizer import train_tokenizer
from eul.model.training import seed_everything

IGNORE = -100


class ModelError(ValueError):
    """A model folder that cannot be loaded; the message says what to fix."""


@dataclass(frozen=True)
class ModelSpec:
    """Size of a model built from scratch (the embedded default is tiny on purpose)."""

    family: str = "t5"
    vocab_size: int = 4000
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 512
    dropout: float = 0.0
    max_input_len: int = 64
    max_target_len: int = 16


def build_model(
    tokenizer: PreTrainedTokenizerBase, spec: ModelSpec, vocab_size: int | None = None
) -> nn.Module:
    """A randomly initialised model of the given family, sized by `spec`; `vocab_size` (at
    least the tokenizer's) gives it more embedding rows than the tokenizer has words."""
    vocab = max(len(tokenizer), vocab_size or 0)
    if spec.family == "t5":
        config = T5Config(
            vocab_size=vocab,
            d_model=spec.d_model,
            d_kv=spec.d_model // spec.num_heads,
            d_ff=spec.d_ff,
            num_layers=spec.num_layers,
            num_decoder_layers=spec.num_layers,
            num_heads=spec.num_heads,
            dropout_rate=spec.dropout,
            feed_forward_proj="relu",
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
        return T5ForConditionalGeneration(config)
    if spec.family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab,
            n_embd=spec.d_model,
            n_layer=spec.num_layers,
            n_head=spec.num_heads,
            n_inner=spec.d_ff,
            n_positions=spec.max_input_len + spec.max_target_len + 2,
            resid_pdrop=spec.dropout,
            embd_pdrop=spec.dropout,
            attn_pdrop=spec.dropout,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.eos_token_id,
        )
        return GPT2LMHeadModel(config)
    raise ModelError(f"unknown model family {spec.family!r}: use 't5' or 'gpt2'")


class TextModel:
    """A model with its tokenizer, seen as text in, text out."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        max_input_len: int = 64,
        max_target_len: int = 16,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_input_len = max_input_len
        self.max_target_len = max_target_len
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._layers: UnlearningModel | None = None

    @property
    def device(self) -> torch.device:
        """Where the weights are; every batch this model builds is put there."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> TextModel:
        """Move the weights, and the unlearning layers already hosted, to `device` (in place).

        A name is resolved and checked (`resolve_device`); a torch.device is used as given.
        Layers added later are created where the model is. Returns the model itself.
        """
        target = resolve_device(device) if isinstance(device, str) else device
        self.model.to(target)
        if self._layers is not None:
            self._layers.layers.to(target)
        return self

    def _on_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = self.device
        return {key: value.to(device) for key, value in batch.items()}

    def unlearning_layers(self) -> UnlearningModel:
        """The unlearning layers hosted by this model (attached, and the base frozen, once)."""
        if self._layers is None:
            self._layers = UnlearningModel(self.model)
        return self._layers

    # -- construction and persistence -------------------------------------------------

    @classmethod
    def create(cls, texts: Sequence[str], spec: ModelSpec, seed: int = 0) -> TextModel:
        """Train a tokenizer on `texts` and build a fresh model of size `spec`."""
        seed_everything(seed)
        tokenizer = train_tokenizer(texts, spec.vocab_size)
        model = build_model(tokenizer, spec)
        return cls(model, tokenizer, spec.max_input_len, spec.max_target_len)

    def save(self, path: str | Path) -> None:
        """Write the weights (safetensors), tokenizer and lengths; from any device.

        Weights on an accelerator are written from the CPU (the model is moved there for
        the write and back), so the files are the same whichever device the model is on.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        device = self.device
        if device.type == "cpu":
            self.model.save_pretrained(path)
        else:
            self.model.to("cpu")
            try:
                self.model.save_pretrained(path)
            finally:
                self.model.to(device)
        self.tokenizer.save_pretrained(path)
        lengths = {"max_input_len": self.max_input_len, "max_target_len": self.max_target_len}
        (path / "eul_text_model.json").write_text(json.dumps(lengths, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> TextModel:
        """Load any local Hugging Face seq2seq or causal LM checkpoint folder, on the CPU
        (`to` moves it)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelError(f"no model at {path}: expected a folder with config.json")
        try:
            config = AutoConfig.from_pretrained(path)
            auto = (
                AutoModelForSeq2SeqLM
                if getattr(config, "is_encoder_decoder", False)
                else AutoModelForCausalLM
            )
            model = auto.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, KeyError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err)
            raise ModelError(f"cannot load model from {path}: {first_line}") from err
        lengths_file = path / "eul_text_model.json"
        lengths = json.loads(lengths_file.read_text()) if lengths_file.is_file() else {}
        return cls(model, tokenizer, **lengths)

    def copy(self) -> TextModel:
        """An independent copy of the weights, on the same device (the tokenizer is shared:
        it is read-only)."""
        clone = type(self.model)(self.model.config)
        clone.load_state_dict(self.model.state_dict())
        clone.to(self.device)
        return TextModel(clone, self.tokenizer, self.max_input_len, self.max_target_len)

    # -- batching -----------------------------------------------------------------------

    def batch(self, inputs: Sequence[str], targets: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tensors for teacher-forced scoring: model kwargs plus `labels` and `content_mask`,
        on the model's device.

        `content_mask` marks target tokens that carry content: not padding, not the end of
        sequence token. Memorisation and membership are measured on those alone.
        """
        tok = self.tokenizer
        if self.is_encoder_decoder:
            enc = self._encode(inputs, self.max_input_len)
            tgt = self._encode(targets, self.max_target_len)
            labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, IGNORE)
            content = (labels != IGNORE) & (labels != tok.eos_token_id)
            return self._on_device(
                {
                    "input_ids": enc["input_ids"],
                    "attention_mask": enc["attention_mask"],
                    "labels": labels,
                    "content_mask": content,
                }
            )
        return self._causal_batch(inputs, targets)

    def _encode(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            list(texts), max_length=max_length, truncation=True, padding=True, return_tensors="pt"
        )

    def batch_from_ids(
        self, inputs: list[list[int]], targets: list[list[int]]
    ) -> dict[str, torch.Tensor]:
        """Encoder-decoder batch from token ids that are already final (e.g. span corruption)."""
        pad = self.tokenizer.pad_token_id

        def padded(rows: list[list[int]], fill: int) -> torch.Tensor:
            width = max(len(r) for r in rows)
            return torch.tensor([r + [fill] * (width - len(r)) for r in rows])

        input_ids = padded(inputs, pad)
        labels = padded(targets, IGNORE)
        return self._on_device(
            {
                "input_ids": input_ids,
                "attention_mask": (padded([[1] * len(r) for r in inputs], 0)),
                "labels": labels,
                "content_mask": (labels != IGNORE) & (labels != self.tokenizer.eos_token_id),
            }
        )

    def _causal_batch(
        self, inputs: Sequence[str], targets: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Decoder-only: prompt, EOS as separator, target, EOS; loss on the target only."""
        tok = self.tokenizer
        eos = tok.eos_token_id
        rows, label_rows = [], []
        for text, target in zip(inputs, targets, strict=True):
            prompt = tok(text, add_special_tokens=False)["input_ids"][: self.max_input_len]
            answer = tok(target, add_special_tokens=False)["input_ids"][: self.max_target_len]
            ids = [*prompt, eos, *answer, eos]
            rows.append(ids)
            label_rows.append([IGNORE] * (len(prompt) + 1) + [*answer, eos])
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        labels = torch.tensor([r + [IGNORE] * (width - len(r)) for r in label_rows])
        # The label of position t is predicted at position t-1: shift once, here.
        labels = torch.cat([labels[:, 1:], torch.full((len(rows), 1), IGNORE)], dim=1)
        content = (labels != IGNORE) & (labels != eos)
        return self._on_device(
            {
                "input_ids": input_ids,
                "attention_mask": attention,
                "labels": labels,
                "content_mask": content,
            }
        )

    def record_batches(
        self, records: Sequence[Record], batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> Iterator[dict[str, torch.Tensor]]:
        order = list(range(len(records)))
        if shuffle:
            random.Random(seed).shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = [records[i] for i in order[start : start + batch_size]]
            yield self.batch([r.text for r in chunk], [r.target for r in chunk])

    # -- scoring ------------------------------------------------------------------------

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-token logits aligned with `batch['labels']`."""
        if self.is_encoder_decoder:
            out = self.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=batch["labels"],
            )
        else:
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.logits

    def token_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p(label token) at every target position (0 where there is no label)."""
        logits = self.logits(batch).float()
        labels = batch["labels"]
        safe = labels.clamp(min=0)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        return logp.masked_fill(labels == IGNORE, 0.0)

    def task_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean token cross-entropy over the whole target (content and EOS)."""
        logits = self.logits(batch)
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), batch["labels"].reshape(-1), ignore_index=IGNORE
        )

    def score(self, records: Sequence[Record], batch_size: int = 128) -> list[list[float]]:
        """Per record, the log-probabilities of its content tokens (teacher forced)."""
        return [values for _, values in self.content_tokens(records, batch_size)]

    @torch.no_grad()
    def content_tokens(
        self, records: Sequence[Record], batch_size: int = 128
    ) -> list[tuple[list[int], list[float]]]:
        """Per record, its target's content token ids and their log-probabilities."""
        self.model.eval()
        found: list[tuple[list[int], list[float]]] = []
        for batch in self.record_batches(records, batch_size):
            # one copy to the CPU per batch, not one per row
            logp = self.token_logprobs(batch).cpu()
            labels, mask = batch["labels"].cpu(), batch["content_mask"].cpu()
            for ids, row, keep in zip(labels, logp, mask, strict=True):
                found.append((ids[keep].tolist(), row[keep].tolist()))
        return found

    @torch.no_grad()
    def choose(
        self, texts: Sequence[str], options: Sequence[str], batch_size: int = 128
    ) -> list[int]:
        """For each text, the index of the most likely option (classification by scoring)."""
        self.model.eval()
        best: list[int] = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            best.extend(self.option_scores(chunk, options).argmax(dim=1).cpu().tolist())
        return best

    def option_scores(self, texts: Sequence[str], options: Sequence[str]) -> torch.Tensor:
        """[texts, options]: log-likelihood of each option as the whole target (its tokens
        and the end of sequence), the score `choose` ranks by. Differentiable in train mode."""
        per_option = []
        for option in options:
            batch = self.batch(texts, [option] * len(texts))
            per_option.append(self.token_logprobs(batch).sum(1))
        return torch.stack(per_option, dim=1)

    @torch.no_grad()
    def generate(
        self, texts: Sequence[str], max_new_tokens: int | None = None, batch_size: int = 64
    ) -> list[str]:
        """Greedy generation, the way an extraction attack would query the model."""
        self.model.eval()
        tok = self.tokenizer
        max_new = max_new_tokens or self.max_target_len
        outputs: list[str] = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            if self.is_encoder_decoder:
                enc = self._on_device(dict(self._encode(chunk, self.max_input_len)))
                ids = self.model.generate(**enc, max_new_tokens=max_new, do_sample=False)
            else:
                ids = self._causal_generate(chunk, max_new)
            outputs.extend(tok.batch_decode(ids.cpu(), skip_special_tokens=True))
        return [o.strip() for o in outputs]

    def _causal_generate(self, texts: list[str], max_new: int) -> torch.Tensor:
        tok = self.tokenizer
        eos = tok.eos_token_id
        prompts = [
            tok(t, add_special_tokens=False)["input_ids"][: self.max_input_len] + [eos]
            for t in texts
        ]
        width = max(len(p) for p in prompts)
        pad = tok.pad_token_id
        device = self.device
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device
        )
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_new,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=eos,
        )
        return out[:, width:]
