"""The log-key vocabulary: special tokens plus the keys seen in the TRAINING sequences.

Ids are fixed by a declarative order: the specials first (:data:`SPECIAL_TOKENS`, ids 0-3), then
the training keys by descending frequency (ties by key string), so the same training set always
gives the same ids. A key that never occurs in training (validation, test, or a new log) maps to
``<unk>``. The vocabulary is saved as ``vocab.json`` next to the sequence parquet files, and the
next-key tokenizer (``verl_recipes.local.keyseq.model``) uses exactly these ids.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from logdata.errors import LogDataError
from logdata.io import atomic_write_text

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
VOCAB_FORMAT = "logrl.keyseq.vocab/1"


@dataclass(frozen=True)
class KeyVocab:
    """An ordered key vocabulary.

    Attributes:
        tokens: All tokens in id order, specials first.
        counts: Training frequency of each key (specials absent).
    """

    tokens: tuple[str, ...]
    counts: dict[str, int]

    @cached_property
    def index(self) -> dict[str, int]:
        """Token → id."""
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def keys(self) -> tuple[str, ...]:
        """The non-special tokens (the training keys)."""
        return self.tokens[len(SPECIAL_TOKENS):]

    def __len__(self) -> int:
        return len(self.tokens)

    def id_of(self, token: str) -> int:
        """Id of one token (``<unk>``'s id when unseen)."""
        return self.index.get(token, SPECIAL_TOKENS.index(UNK))

    def to_tokens(self, keys: Iterable[str]) -> list[str]:
        """Map keys to vocabulary tokens: unseen keys become ``<unk>``.

        >>> KeyVocab.build([["E1", "E2"]]).to_tokens(["E2", "E9"])
        ['E2', '<unk>']
        """
        known = self.index
        return [k if k in known else UNK for k in keys]

    def encode(self, keys: Iterable[str]) -> list[int]:
        """Map keys to ids (unseen keys → the ``<unk>`` id).

        >>> KeyVocab.build([["E1", "E2", "E2"]]).encode(["E2", "E1", "E9"])
        [4, 5, 3]
        """
        known = self.index
        unk = known[UNK]
        return [known.get(k, unk) for k in keys]

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]]) -> KeyVocab:
        """Build the vocabulary from training key sequences.

        Raises:
            LogDataError: When a key contains whitespace (a key must be one tokenizer word).
        """
        counts = Counter(k for seq in sequences for k in seq if k not in SPECIAL_TOKENS)
        bad = [k for k in counts if not k or any(c.isspace() for c in k)]
        if bad:
            raise LogDataError(f"log keys must be non-empty and have no whitespace: {bad[:3]}")
        ordered = sorted(counts, key=lambda k: (-counts[k], k))
        return cls(tokens=(*SPECIAL_TOKENS, *ordered), counts={k: counts[k] for k in ordered})

    def to_json(self) -> dict:
        """The ``vocab.json`` payload."""
        return {
            "format": VOCAB_FORMAT,
            "special_tokens": {"pad": PAD, "bos": BOS, "eos": EOS, "unk": UNK},
            "token_to_id": self.index,
            "counts": self.counts,
        }

    def save(self, path: Path) -> Path:
        """Write ``vocab.json`` atomically and return its path."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> KeyVocab:
        """Read a ``vocab.json`` written by :meth:`save`.

        Raises:
            LogDataError: When the file is missing or not a key vocabulary.
        """
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LogDataError(f"cannot read vocabulary {path}: {exc}") from None
        if payload.get("format") != VOCAB_FORMAT:
            raise LogDataError(f"{path} is not a key vocabulary ({VOCAB_FORMAT})")
        mapping = payload["token_to_id"]
        tokens = tuple(sorted(mapping, key=mapping.__getitem__))
        if tokens[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS or [mapping[t] for t in tokens] != list(
            range(len(tokens))
        ):
            raise LogDataError(f"{path}: ids must be 0..n-1 with the special tokens first")
        return cls(tokens=tokens, counts=dict(payload.get("counts", {})))
