"""The tokenizer of models built here, kept apart from `eul.model.text_model` so that the data stage
that trains it (`eul stage prepare`, rerun by every purge) does not load torch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
N_SENTINELS = 20
SENTINELS = tuple(f"<extra_id_{i}>" for i in range(N_SENTINELS))


def _word_counts(texts: Sequence[str], tok: Tokenizer) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        normalized = tok.normalizer.normalize_str(text)
        counts.update(word for word, _ in tok.pre_tokenizer.pre_tokenize_str(normalized))
    return counts


def train_tokenizer(texts: Sequence[str], vocab_size: int = 4000) -> PreTrainedTokenizerFast:
    """A lower-cased WordPiece tokenizer built from the given texts (no download needed).

    The vocabulary is the special tokens, every character (alone and as a word piece), then
    the most frequent words, ties broken alphabetically. Built here rather than by the
    `tokenizers` trainer, whose choice among equally frequent pieces changes from process
    to process: the same data must give the same tokenizer, and so the same model.
    """
    tok = Tokenizer(models.WordPiece(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = _word_counts(texts, tok)
    chars = sorted({c for word in counts for c in word})
    vocab = [PAD, EOS, UNK, *SENTINELS, *chars, *(f"##{c}" for c in chars)]
    known = set(vocab)
    for word in sorted(counts, key=lambda w: (-counts[w], w)):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
            known.add(word)
    tok.model = models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token=UNK)
    tok.decoder = decoders.WordPiece()
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=list(SENTINELS),
    )
