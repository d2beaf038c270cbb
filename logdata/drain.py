"""A Drain-style online template miner with vectorised masking and a masked-line cache.

The algorithm is Drain (He et al., ICWS 2017): lines are routed through a fixed-depth prefix
tree by token count and their first tokens, and joined to the most similar cluster of the leaf
when the share of equal tokens reaches the similarity threshold; differing tokens become ``<*>``.

What makes it fast is around the tree, not in it: lines arrive as Arrow arrays, the masks run
in native code (``pyarrow.compute.replace_substring_regex``, RE2), the masked contents are
dictionary-encoded (raw lines are deduplicated before masking while repeats are common), and the
tree search runs once per *distinct* masked line; a cache maps each
masked line it has seen to its cluster, and the results are mapped back to lines with numpy.

Cluster ids never change once given, so a line's cluster is final when it is parsed, while the
cluster's template text can still generalise; callers write the template text at the end.
:class:`TemplateStore` persists the templates as JSON so a later file reuses the same ids.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from logdata.errors import LogDataError
from logdata.formats import PARAM, is_re2
from logdata.io import atomic_write_text

logger = logging.getLogger(__name__)

STORE_VERSION = 1
#: The masked-line cache is cleared when it grows past this many entries (bounds memory).
CACHE_LIMIT = 2_000_000
#: Mask distinct raw lines (instead of every line) while a batch has at most this share of
#: distinct lines; re-checked on every batch that uses it and every ``REPROBE_EVERY`` batches.
DEDUPE_RATIO = 0.7
REPROBE_EVERY = 8


def event_id(cluster_id: int) -> str:
    """Return the public event id of a cluster (``E1`` for cluster 0).

    >>> event_id(0)
    'E1'
    """
    return f"E{cluster_id + 1}"


def mask_array(contents: pa.Array, masks: Sequence[tuple[str, str]]) -> pa.Array:
    r"""Apply ``(regex, replacement)`` masks to every string of ``contents`` in native code.

    >>> mask_array(pa.array(["took 12 ms"]), [(r"\b\d+\b", "<*>")]).to_pylist()
    ['took <*> ms']
    """
    out = contents
    for pattern, replacement in masks:
        if is_re2(pattern):
            out = pc.replace_substring_regex(out, pattern=pattern, replacement=replacement)
        else:  # look-around or back-references: Python's re, one distinct line at a time
            regex = _python_mask(pattern)
            out = pa.array([None if text is None else regex.sub(replacement, text)
                            for text in out.to_pylist()], out.type)
    return out


@cache
def _python_mask(pattern: str) -> re.Pattern:
    logger.warning("mask %r is not RE2 syntax: it runs with Python's re (slower)", pattern)
    return re.compile(pattern)


def _has_digit(token: str) -> bool:
    return any(ch.isdigit() for ch in token)


class Drain:
    """The Drain prefix tree and its clusters.

    Args:
        depth: tree depth (>= 2) as in Drain: root, length layer, ``depth - 3`` token layers,
            leaves (3 or less: lines are routed by token count only; LogGPT's Thunderbird
            setting is 2).
        similarity: minimum share of equal tokens for a line to join a cluster.
        max_children: maximum children of an inner node before tokens go to ``<*>``.
    """

    def __init__(self, depth: int = 4, similarity: float = 0.5, max_children: int = 100) -> None:
        if depth < 2:
            raise LogDataError(f"Drain depth must be at least 2, got {depth}")
        self.depth = depth
        self.similarity = similarity
        self.max_children = max_children
        self.root: dict[int, dict] = {}
        self.clusters: list[list[str]] = []

    def _route(self, tokens: list[str], create: bool) -> list[int] | None:
        """Return the leaf (list of cluster ids) for ``tokens``, creating nodes if asked."""
        node = self.root.get(len(tokens))
        if node is None:
            if not create:
                return None
            node = self.root[len(tokens)] = {}
        for token in tokens[: self.routing_tokens(len(tokens))]:
            child = node.get(token)
            if child is None:
                if not create:
                    child = node.get(PARAM)
                    if child is None:
                        return None
                else:
                    child = self._new_child(node, token)
            node = child
        leaf = node.get("")
        if leaf is None:
            if not create:
                return None
            leaf = node[""] = []
        return leaf

    def routing_tokens(self, n_tokens: int) -> int:
        """How many leading tokens route a line of ``n_tokens`` tokens.

        Drain's depth counts the root, the length layer and the leaf, so ``depth - 3`` token
        layers (logparser: ``self.depth = depth - 2`` and routing while ``1 <= d < self.depth``;
        drain3 alike). Like drain3, a line's last token never routes, so short lines differing
        only in their last word meet in one leaf and get compared (logparser routes it and then
        never finds the one-token cluster again).

        >>> Drain(depth=4).routing_tokens(10), Drain(depth=6).routing_tokens(2), Drain(3).routing_tokens(5)
        (1, 1, 0)
        """
        return max(0, min(self.depth - 3, n_tokens - 1))

    def _new_child(self, node: dict, token: str) -> dict:
        """Create (or reuse ``<*>``) the child of ``node`` for ``token`` as Drain does."""
        n_children = sum(1 for key in node if key)
        if _has_digit(token):
            key = PARAM
        elif PARAM in node:
            key = token if n_children < self.max_children else PARAM
        elif n_children + 1 < self.max_children:
            key = token
        else:
            key = PARAM
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        return child

    def _best(self, leaf: list[int], tokens: list[str]) -> int | None:
        best, best_sim, best_params = None, -1.0, -1
        n = len(tokens) or 1
        for cid in leaf:
            template = self.clusters[cid]
            same = params = 0
            for t1, t2 in zip(template, tokens, strict=False):
                if t1 == PARAM:
                    params += 1
                elif t1 == t2:
                    same += 1
            sim = same / n
            if sim > best_sim or (sim == best_sim and params > best_params):
                best, best_sim, best_params = cid, sim, params
        if best is not None and (best_sim >= self.similarity or not tokens):
            return best
        return None

    def add(self, tokens: list[str]) -> int:
        """Join ``tokens`` to a cluster (creating one if none is similar) and return its id."""
        leaf = self._route(tokens, create=False)
        cid = self._best(leaf, tokens) if leaf else None
        if cid is None:
            return self.insert(tokens)
        template = self.clusters[cid]
        if template != tokens:
            self.clusters[cid] = [t1 if t1 == t2 else PARAM for t1, t2 in zip(template, tokens, strict=False)]
        return cid

    def insert(self, tokens: list[str]) -> int:
        """Create a new cluster for ``tokens`` and return its id."""
        cid = len(self.clusters)
        self.clusters.append(list(tokens))
        leaf = self._route(tokens, create=True)
        assert leaf is not None
        leaf.append(cid)
        return cid

    def template(self, cid: int) -> str:
        """Return the template text of cluster ``cid``."""
        return " ".join(self.clusters[cid])


@dataclass(frozen=True)
class MinerSettings:
    """Settings that must match for a stored template set to be reused."""

    masks: tuple[tuple[str, str], ...]
    depth: int = 4
    similarity: float = 0.5
    max_children: int = 100

    def to_json(self) -> dict:
        """Return a JSON-serialisable dict."""
        return {
            "masks": [list(m) for m in self.masks],
            "depth": self.depth,
            "similarity": self.similarity,
            "max_children": self.max_children,
        }


class TemplateMiner:
    r"""Vectorised masking + Drain over distinct masked lines + cache.

    Args:
        settings: masks and Drain parameters.

    Example:
        >>> miner = TemplateMiner(MinerSettings(masks=((r"\b\d+\b", "<*>"),)))
        >>> ids = miner.add_batch(pa.array(["job 1 done", "job 22 done", "disk full"]))
        >>> [miner.template(i) for i in ids]
        ['job <*> done', 'job <*> done', 'disk full']
    """

    def __init__(self, settings: MinerSettings) -> None:
        self.settings = settings
        self.drain = Drain(settings.depth, settings.similarity, settings.max_children)
        self.cache: dict[str, int] = {}
        #: masked line -> id of a loaded store's templates, kept in the cache across clears
        self.stored: dict[str, int] = {}
        self.dedupe_first = True
        self.batches = 0
        self.fixed: dict[str, int] = {}
        self.counts = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.drain.clusters)

    def template(self, cid: int) -> str:
        """Return the current template text of cluster ``cid``."""
        return self.drain.template(cid)

    def templates(self) -> list[str]:
        """Return the template texts indexed by cluster id."""
        return [" ".join(t) for t in self.drain.clusters]

    def _count(self, ids: np.ndarray) -> None:
        counts = np.bincount(ids, minlength=len(self))
        if len(self.counts) < len(counts):
            self.counts = np.concatenate(
                [self.counts, np.zeros(len(counts) - len(self.counts), dtype=np.int64)]
            )
        self.counts[: len(counts)] += counts

    def add_batch(self, contents: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Mine the templates of a batch of log contents.

        Args:
            contents: string array (nulls read as empty content).

        Returns:
            int32 numpy array of cluster ids, one per input line.
        """
        raw = pc.fill_null(contents, "")
        if isinstance(raw, pa.ChunkedArray):
            raw = raw.combine_chunks()
        self.batches += 1
        if self.dedupe_first or self.batches % REPROBE_EVERY == 0:
            # mask each distinct raw line once: the regexes are the costliest step
            first = pc.dictionary_encode(raw)
            self.dedupe_first = len(first.dictionary) <= DEDUPE_RATIO * max(1, len(raw))
            encoded = pc.dictionary_encode(mask_array(first.dictionary, self.settings.masks))
            encoded = pa.DictionaryArray.from_arrays(
                pc.take(encoded.indices, first.indices), encoded.dictionary)
        else:
            encoded = pc.dictionary_encode(mask_array(raw, self.settings.masks))
        dictionary = encoded.dictionary.to_pylist()
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        lookup = np.empty(len(dictionary), dtype=np.int32)
        cache = self.cache
        for i, line in enumerate(dictionary):
            cid = cache.get(line)
            if cid is None:
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                    cache.update(self.stored)
                cid = cache[line] = self.drain.add(line.split())
            lookup[i] = cid
        ids = lookup[indices] if len(indices) else np.zeros(0, dtype=np.int32)
        self._count(ids)
        return ids

    def add_fixed(self, templates: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Register pre-parsed templates verbatim (structured CSV input) and return their ids."""
        encoded = pc.dictionary_encode(pc.fill_null(templates, ""))
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.unify_dictionaries().combine_chunks()
        lookup = np.empty(len(encoded.dictionary), dtype=np.int32)
        for i, text in enumerate(encoded.dictionary.to_pylist()):
            cid = self.fixed.get(text)
            if cid is None:
                cid = self.fixed[text] = self.drain.insert(text.split())
            lookup[i] = cid
        ids = lookup[encoded.indices.to_numpy(zero_copy_only=False)]
        self._count(ids)
        return ids

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path, dataset: str) -> None:
        """Write the template store (id, template, count) and settings as JSON, atomically."""
        rows = [
            {"event_id": event_id(cid), "template": text, "count": int(self.counts[cid])}
            for cid, text in enumerate(self.templates())
        ]
        payload = {
            "version": STORE_VERSION,
            "dataset": dataset,
            "settings": self.settings.to_json(),
            "templates": rows,
        }
        atomic_write_text(Path(path), json.dumps(payload, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path, settings: MinerSettings) -> TemplateMiner:
        """Rebuild a miner from a stored template set so new lines reuse its ids.

        Raises:
            LogDataError: when the file is not a template store.
        """
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
            rows = payload["templates"]
            ids = [int(r["event_id"][1:]) - 1 for r in rows]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LogDataError(f"{path} is not a template store: {exc}") from None
        if ids != list(range(len(rows))):
            raise LogDataError(f"{path}: template ids are not E1..E{len(rows)} in order")
        if payload.get("settings") != settings.to_json():
            logger.warning("template store %s was mined with other settings; reusing its ids", path)
        miner = cls(settings)
        for cid, row in enumerate(rows):
            tokens = str(row["template"]).split()
            miner.drain.insert(tokens)
            # A masked line equal to a stored template is that template, as in the mining pass
            # (whose cache kept the id a line got when first seen). Drain's similarity alone
            # would not say so: a template's ``<*>`` never counts as a match, so a line such as
            # "<*> block <*> to <*>" (masks leave it so) falls below the threshold of its own
            # template and a served log would get a new key where the offline parse had E12.
            miner.stored.setdefault(" ".join(tokens), cid)
        miner.cache.update(miner.stored)
        miner.counts = np.array([int(r.get("count", 0)) for r in rows], dtype=np.int64)
        return miner


def grouping_accuracy(truth: Sequence, predicted: Sequence) -> float:
    """Grouping accuracy as loghub's evaluator defines it.

    A line counts as correct when the set of lines in its predicted group equals the set of
    lines in its ground-truth group.

    >>> grouping_accuracy(["a", "a", "b"], [1, 1, 2]), grouping_accuracy(["a", "a", "b"], [1, 1, 1])
    (1.0, 0.0)
    """
    if len(truth) != len(predicted):
        raise ValueError("truth and predicted differ in length")
    if not len(truth):
        return 0.0
    t = pc.dictionary_encode(pa.array([str(x) for x in truth])).indices.to_numpy()
    p = pc.dictionary_encode(pa.array([str(x) for x in predicted])).indices.to_numpy()
    truth_sizes = np.bincount(t)
    pred_sizes = np.bincount(p)
    pair = t.astype(np.int64) * (p.max() + 1) + p
    _, pair_idx, pair_sizes = np.unique(pair, return_inverse=True, return_counts=True)
    pair_size = pair_sizes[pair_idx]
    correct = (pair_size == truth_sizes[t]) & (pair_size == pred_sizes[p])
    return float(correct.mean())
