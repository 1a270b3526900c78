"""The ``bert`` family: a pre-trained BERT-family encoder fine-tuned for sequence
classification (or regression, or a tag per word), and the tokenizer that travels inside the
registered model. Training starts from the checkpoint's weights; explained by integrated
gradients over the token embeddings; exported to ONNX with token ids and attention mask
(rows and tokens dynamic).

Platform code for any text workload: it never names a corpus or a package. A workload
points ``encoder_options`` at a directory holding a Hugging Face BERT checkpoint
(``config.json``, ``model.safetensors``, ``tokenizer.json``); keel reads it with
``transformers``/``tokenizers``/``safetensors`` from that directory only, never from the
hub. The net's architecture (the checkpoint's config) and the tokenizer (its JSON) are
copied into the model's own artifacts, so a registered text model loads without the
checkpoint directory. Importing this module loads nothing; ``transformers`` is imported
when a net is built.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn

from keel.errors import ConfigError
from keel.model.families.base import FamilyParams, NetFamily, most_important
from keel.model.net import NetConfig, dense

# Distributions a served text model needs beyond keel's own (keel.registry.packaging).
RUNTIME_DISTRIBUTIONS = ("transformers", "tokenizers", "safetensors")


def offline() -> None:
    """Hugging Face libraries never reach the hub from keel (their own env vars)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def encoder_options(
    model_dir: Path, layers: int = 0, max_length: int = 64, per_token: bool = False
) -> dict[str, Any]:
    """``Workload.net_options`` for a BERT checkpoint in ``model_dir``: the first
    ``layers`` transformer layers (0: all), inputs cut at ``max_length`` tokens;
    ``per_token``: a tag per word (token classification) instead of one per text."""
    model_dir = Path(model_dir)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name}: the encoder checkpoint lacks {name}")
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") != "bert":
        raise ValueError(f"{model_dir}/config.json: model_type {config.get('model_type')!r}, keel reads bert")
    total = int(config["num_hidden_layers"])
    if not 0 <= layers <= total:
        raise ValueError(f"encoder layers={layers}: the checkpoint in {model_dir} has {total}")
    config["num_hidden_layers"] = layers or total
    keep = ("architectures", "_name_or_path", "transformers_version", "gradient_checkpointing", "use_cache")
    return {
        "arch": "bert",
        "encoder": {
            "source": str(model_dir),
            "config": {k: v for k, v in config.items() if k not in keep},
            "max_length": int(max_length),
            "per_token": bool(per_token),
        },
    }


# ---------------------------------------------------------------- tokenizer
@dataclass(frozen=True)
class TextPreprocessor:
    """Raw rows -> (token ids, attention mask) of the ``text`` column, padded to the
    longest row of the frame, cut at ``max_length`` tokens. Missing text is empty text.
    ``tokenizer`` is the tokenizers library's JSON, so the model carries it.

    ``words`` (token classification): the text is split on whitespace into words first,
    and the second array holds word positions instead of the mask: k + 1 at the first
    piece of word k, -1 at special tokens and a word's later pieces, 0 at padding (the
    net attends wherever it is not 0)."""

    text: str
    tokenizer: str
    max_length: int
    max_chars: int = 2000  # longer inputs are refused when served
    words: bool = False
    kind: str = "text"
    categorical: list[str] = field(default_factory=list)  # the tabular Preprocessor's shape
    numeric: list[str] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)

    REQUIREMENTS: ClassVar[tuple[str, ...]] = RUNTIME_DISTRIBUTIONS

    @classmethod
    def fit(cls, column: str, encoder: dict[str, Any], max_chars: int = 2000) -> TextPreprocessor:
        source = Path(encoder["source"]) / "tokenizer.json"
        return cls(
            column, source.read_text(), int(encoder["max_length"]), max_chars, bool(encoder.get("per_token"))
        )

    @property
    def columns(self) -> list[str]:
        return [self.text]

    @property
    def cardinalities(self) -> list[int]:  # no categorical embeddings
        return []

    @property
    def numeric_width(self) -> int:
        return 0

    @property
    def text_limits(self) -> dict[str, int]:
        """Serving: each text input and the most characters it may have."""
        return {self.text: self.max_chars}

    @cached_property
    def _tokenizer(self):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(self.tokenizer)
        tok.enable_truncation(self.max_length)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the call
        return tok

    @cached_property
    def _words(self) -> frozenset[str]:
        """Whole words the tokenizer's vocabulary holds (no ## pieces, no specials)."""
        vocab = json.loads(self.tokenizer)["model"]["vocab"]
        return frozenset(w for w in vocab if not w.startswith("##") and not w.startswith("["))

    def texts(self, frame: pd.DataFrame) -> list[str]:
        return ["" if not isinstance(v, str) else v for v in frame[self.text].tolist()]

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        texts = self.texts(frame)
        if self.words:
            encoded = self._tokenizer.encode_batch([t.split() for t in texts], is_pretokenized=True)
        else:
            encoded = self._tokenizer.encode_batch(texts)
        if not encoded:
            return np.zeros((0, 1), np.int64), np.zeros((0, 1), np.int64)
        ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
        if not self.words:
            return ids, mask
        positions = np.where(mask > 0, -1, 0).astype(np.int64)
        for row, e in enumerate(encoded):
            seen = set()
            for t, w in enumerate(e.word_ids):
                if w is not None and w not in seen:
                    seen.add(w)
                    positions[row, t] = w + 1
        return ids, positions

    def projection(self, frame: pd.DataFrame) -> pd.DataFrame:
        """What drift compares for a text column: characters, tokens, and the share of
        words the vocabulary lacks (split into pieces or unknown)."""
        texts = self.texts(frame)
        pre = self._tokenizer.pre_tokenizer
        normal = self._tokenizer.normalizer
        oov = []
        for t in texts:
            words = [w for w, _ in pre.pre_tokenize_str(normal.normalize_str(t)) if w.isalnum()]
            oov.append(sum(w not in self._words for w in words) / len(words) if words else 0.0)
        _, b = self.transform(frame)
        mask = b != 0
        return pd.DataFrame(
            {
                f"{self.text}/chars": [float(len(t)) for t in texts],
                f"{self.text}/tokens": mask.sum(axis=1).astype(np.float64),
                f"{self.text}/oov_rate": oov,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextPreprocessor:
        return cls(**data)


# ---------------------------------------------------------------- net
class BertNet(nn.Module):
    """A BERT encoder (``transformers.BertModel``, no pooler) -> mean of the token
    states under the attention mask (the pooling sentence-embedding checkpoints are
    trained for) -> dropout -> the dense ``hidden`` head -> ``outputs``.

    ``pretrained=True`` loads the checkpoint's weights from ``encoder.source`` (the
    first ``num_hidden_layers`` layers); the registered model rebuilds the architecture
    from ``encoder.config`` and loads its own fine-tuned state dict instead."""

    chunk_rows: ClassVar[int] = 64  # rows per forward when predicting (bounded memory)
    per_token: bool  # token classification: a tag per token, no pooling

    def __init__(self, cfg: NetConfig, pretrained: bool = False):
        super().__init__()
        offline()
        from transformers import BertConfig, BertModel

        self.cfg = cfg
        hf = BertConfig(**cfg.encoder["config"])
        self.bert = BertModel(hf, add_pooling_layer=False)
        if cfg.encoder.get("heads"):  # structurally pruned (Bert.prune): fewer heads per layer
            shrink_heads(self.bert, int(cfg.encoder["heads"]))
        if pretrained:
            self._load_checkpoint(Path(cfg.encoder["source"]) / "model.safetensors")
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = dense(hf.hidden_size, cfg)
        self.per_token = bool(cfg.encoder.get("per_token", False))

    def _load_checkpoint(self, path: Path) -> None:
        from safetensors.torch import load_file

        state = {k.removeprefix("bert."): v for k, v in load_file(str(path)).items()}
        own = self.bert.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(f"{path}: no weights for {missing[:5]} ({len(missing)} in all)")
        self.bert.load_state_dict({k: state[k] for k in own}, strict=True)

    def states(self, ids: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token states, attention mask); ``b``: the mask, or word positions (not 0: attend)."""
        mask = (b != 0).long()
        return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state, mask

    def embed(self, ids: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The text's embedding: token states averaged under the mask."""
        hidden, mask = self.states(ids, b)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)

    def forward(self, ids: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.per_token:  # (rows, tokens, tags)
            return self.head(self.dropout(self.states(ids, b)[0]))
        out = self.head(self.dropout(self.embed(ids, b)))
        return out.squeeze(1) if self.cfg.outputs == 1 else out


# ---------------------------------------------------------------- structured pruning
def head_rows(heads: torch.Tensor, size: int) -> torch.Tensor:
    """The rows of the query/key/value projections (columns of the attention output) that
    belong to ``heads`` (indices), each ``size`` wide."""
    return (heads.unsqueeze(1) * size + torch.arange(size)).flatten()


def shrink_heads(bert: Any, kept: int) -> None:
    """Every layer of ``bert`` (a transformers BertModel) made ``kept`` attention heads wide,
    of the original head size, for a pruned state dict to fill (Bert.prune). transformers 5
    has no head pruning of its own; its attention reads the head count from the projections."""
    for layer in bert.encoder.layer:
        attn, out = layer.attention.self, layer.attention.output
        width = kept * attn.attention_head_size
        for name in ("query", "key", "value"):
            setattr(attn, name, nn.Linear(getattr(attn, name).in_features, width))
        out.dense = nn.Linear(width, out.dense.out_features)
        attn.num_attention_heads, attn.all_head_size = kept, width


def head_importance(layer: Any) -> torch.Tensor:
    """Per attention head: the L1 norm of its query, key and value rows times that of its
    columns in the attention output (what it reads times what it writes)."""
    attn, out = layer.attention.self, layer.attention.output
    size, heads = attn.attention_head_size, attn.all_head_size // attn.attention_head_size
    reads = sum(getattr(attn, n).weight.abs().sum(1) for n in ("query", "key", "value"))
    writes = out.dense.weight.abs().sum(0)
    return (reads * writes).view(heads, size).sum(1)


def neuron_importance(layer: Any) -> torch.Tensor:
    """Per feed-forward neuron: the L1 norms of its incoming and outgoing weights, multiplied."""
    return layer.intermediate.dense.weight.abs().sum(1) * layer.output.dense.weight.abs().sum(0)


class BertParams(FamilyParams):
    encoder: dict[str, Any] = Field(default_factory=dict)  # encoder_options(...)["encoder"]


class Bert(NetFamily):
    name = "bert"
    net = BertNet
    Params = BertParams
    pretrained = True
    onnx_inputs = ("input_ids", "attention_mask")
    explanation_method = "tokens"
    chunk_rows = BertNet.chunk_rows
    adapter_root = "bert"  # LoRA adapts the encoder; the head trains in full
    prunable = True  # attention heads and feed-forward neurons
    params: BertParams

    def check(self, features: Any) -> None:
        if len(features.text) != 1:
            raise ConfigError(
                f"features.text {features.text}: net family 'bert' reads exactly one text column"
            )
        if not self.params.encoder:
            raise ConfigError(
                "net family 'bert' needs its encoder checkpoint in params "
                "(keel.model.families.bert.encoder_options)"
            )

    def fit_preprocessor(self, frame: pd.DataFrame, features: Any) -> TextPreprocessor:
        return TextPreprocessor.fit(features.text[0], self.params.encoder)

    @torch.no_grad()
    def prune(self, net: Any, sparsity: float) -> BertNet:
        """Each layer keeps its most important ``1 - sparsity`` attention heads and feed-forward
        neurons (the same counts in every layer, so the config describes the net: the kept heads
        as ``encoder.heads``, the neurons as ``intermediate_size``); embeddings and the head stay."""
        layers = list(net.bert.encoder.layer)
        keep_heads = [most_important(head_importance(x), sparsity) for x in layers]
        keep_ffn = [most_important(neuron_importance(x), sparsity) for x in layers]
        config = {**net.cfg.encoder["config"], "intermediate_size": len(keep_ffn[0])}
        encoder = {**net.cfg.encoder, "config": config, "heads": len(keep_heads[0])}
        pruned = BertNet(replace(net.cfg, encoder=encoder))
        state = dict(net.state_dict())
        size = layers[0].attention.self.attention_head_size
        for i in range(len(layers)):
            prefix = f"bert.encoder.layer.{i}."
            rows = head_rows(keep_heads[i], size)
            for name in ("query", "key", "value"):
                for part in ("weight", "bias"):
                    key = f"{prefix}attention.self.{name}.{part}"
                    state[key] = state[key][rows]
            key = f"{prefix}attention.output.dense.weight"
            state[key] = state[key][:, rows]
            for part in ("weight", "bias"):
                key = f"{prefix}intermediate.dense.{part}"
                state[key] = state[key][keep_ffn[i]]
            key = f"{prefix}output.dense.weight"
            state[key] = state[key][:, keep_ffn[i]]
        pruned.load_state_dict({k: v.contiguous() for k, v in state.items()})
        return pruned.eval()

    def adapter_modules(self) -> set[str] | None:
        """The encoder's linear layers, from its config alone (built on the meta device: no
        weights read, no memory)."""
        if not self.params.encoder:
            return None
        offline()
        from transformers import BertConfig, BertModel

        with torch.device("meta"):
            encoder = BertModel(BertConfig(**self.params.encoder["config"]), add_pooling_layer=False)
        return {n.rsplit(".", 1)[-1] for n, m in encoder.named_modules() if isinstance(m, nn.Linear)}

    def base_checkpoint(self, net: Any) -> Path:
        return Path(net.cfg.encoder["source"]) / "model.safetensors"

    def load_base(self, net: Any, path: Path) -> None:
        net._load_checkpoint(path)

    def load_preprocessor(self, data: dict[str, Any]) -> TextPreprocessor:
        return TextPreprocessor.from_dict(data)

    def explanation(self, net: Any) -> str | None:
        return None if getattr(net, "per_token", False) else "tokens"  # a tag per token: no one target

    def onnx_axes(self, net: Any) -> dict[str, dict[int, str]]:
        axes = {n: {0: "rows", 1: "tokens"} for n in self.onnx_inputs}
        axes["raw"] = {0: "rows", 1: "tokens"} if getattr(net, "per_token", False) else {0: "rows"}
        return axes
