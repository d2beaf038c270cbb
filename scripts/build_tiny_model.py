#!/usr/bin/env python
"""Build a tiny causal language model offline, for tests, benchmarks and the quickstart.

Nothing is downloaded: a byte-level BPE tokenizer is trained with ``tokenizers`` on local text,
given a Qwen-style chat template, and paired with a randomly initialised model of one of the
architectures in :data:`ARCHITECTURES`. The result is a normal Hugging Face folder that
``AutoTokenizer``/``AutoModelForCausalLM`` load with ``trust_remote_code`` off.

Usage::

    python scripts/build_tiny_model.py --out outputs/tiny-qwen2 --corpus datasets/synthetic/train.parquet
    python scripts/build_tiny_model.py --out /tmp/scorer --arch gpt2 --layers 6 --hidden 768 --heads 12

The corpus may be a text file (one document per line) or a parquet file from the data stage (its
prompt messages and logs are used). Without a corpus, a small built-in text is used.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from logdata.cliargs import add_flag, add_out_flag, add_seed_flag, new_parser
from logdata.io import require_file

logger = logging.getLogger("build_tiny_model")

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Answer tags get one token each but are *not* special: decoding with skip_special_tokens keeps them.
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

# Qwen-style ChatML template: the same shape as Qwen2's, so VeRL and predict render it identically.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

FALLBACK_CORPUS = [
    "You are a log analysis expert. Decide whether the log is normal or abnormal.",
    "<think>The log reports a routine event with no error keyword.</think><answer>normal</answer>",
    "<think>The log reports a kernel failure and a fatal error.</think><answer>abnormal</answer>",
    "instruction cache parity error corrected",
    "generating core.<*> ciod: failed to read message prefix on control stream",
    "Receiving block blk_<*> src: /<*>:<*> dest: /<*>:<*>",
]


def _qwen2(vocab: int, hidden: int, layers: int, heads: int, ctx: int, **ids: int) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=ctx,
        tie_word_embeddings=True, **ids,
    )


def _llama(vocab: int, hidden: int, layers: int, heads: int, ctx: int, **ids: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=ctx, **ids,
    )


def _gpt2(vocab: int, hidden: int, layers: int, heads: int, ctx: int, **ids: int) -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=ctx, **ids)


def _gpt_neo(vocab: int, hidden: int, layers: int, heads: int, ctx: int, **ids: int) -> Any:
    from transformers import GPTNeoConfig

    return GPTNeoConfig(
        vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
        attention_types=[[["global", "local"], max(1, layers // 2)]] if layers % 2 == 0
        else [[["global"], layers]],
        max_position_embeddings=ctx, window_size=min(256, ctx), **ids,
    )


# One table: architecture name -> config factory (vocab, hidden, layers, heads, context).
ARCHITECTURES: dict[str, Callable[..., Any]] = {
    "qwen2": _qwen2,
    "llama": _llama,
    "gpt2": _gpt2,
    "gpt_neo": _gpt_neo,
}


def build_chat_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` and give it a chat template.

    Args:
        texts: Training text; each item is one document.
        vocab_size: Target vocabulary size, special tokens included.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with pad/eos set and a ChatML template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(list(texts) or FALLBACK_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token=None, unk_token=None,
    )
    tokenizer.add_tokens(TAG_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_causal_lm(
    out_dir: str | Path,
    texts: Iterable[str] = (),
    arch: str = "qwen2",
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    max_positions: int = 2048,
) -> Path:
    """Build and save a randomly initialised causal LM with its own tokenizer.

    Args:
        out_dir: Folder to write (created; existing files are overwritten).
        texts: Text to train the tokenizer on (the built-in text when empty).
        arch: A key of :data:`ARCHITECTURES`.
        vocab_size: Tokenizer vocabulary size; the model's embedding matches the trained size.
        hidden_size: Model width.
        num_layers: Number of transformer blocks.
        num_heads: Attention heads (must divide ``hidden_size``).
        seed: Seed for the weight initialisation.
        max_positions: Context length of the model.

    Returns:
        The output folder, loadable with ``AutoModelForCausalLM.from_pretrained``.

    Raises:
        ValueError: On an unknown architecture or a width not divisible by the heads.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(ARCHITECTURES)}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_chat_tokenizer(texts, vocab_size)
    ids = {
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.eos_token_id,
    }
    config = ARCHITECTURES[arch](len(tokenizer), hidden_size, num_layers, num_heads, max_positions, **ids)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    logger.info("tiny %s model (%d parameters) written to %s", arch, model.num_parameters(), out)
    return out


def corpus_texts(path: Path | None) -> list[str]:
    """Read tokenizer training text from a text file or a data-stage parquet file.

    Args:
        path: A ``.txt``/``.log`` file (one document per line) or a ``.parquet`` file; ``None``
            for the built-in text.

    Returns:
        The documents; for parquet, every prompt message, log and reference rationale.
    """
    if path is None:
        return list(FALLBACK_CORPUS)
    if path.suffix != ".parquet":
        return [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line]
    import pandas as pd

    frame = pd.read_parquet(path)
    texts: list[str] = list(FALLBACK_CORPUS)
    for column in ("prompt", "messages"):
        if column in frame:
            texts.extend(str(m["content"]) for msgs in frame[column] for m in msgs)
    if "extra_info" in frame:
        for info in frame["extra_info"]:
            texts.extend(str(info[k]) for k in ("log", "reference_rationale") if info.get(k))
    return texts


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = new_parser(description=__doc__.split("\n\n")[0])
    add_out_flag(parser, "output folder")
    add_flag(parser, "--corpus", type=Path, default=None, metavar="PATH",
             help="text or parquet for the tokenizer (default: a small built-in text)")
    add_flag(parser, "--arch", default="qwen2", choices=sorted(ARCHITECTURES),
             help="model architecture")
    add_flag(parser, "--vocab-size", type=int, default=512, metavar="N",
             help="tokenizer vocabulary size")
    add_flag(parser, "--hidden", type=int, default=64, metavar="N", help="hidden size")
    add_flag(parser, "--layers", type=int, default=2, metavar="N", help="transformer layers")
    add_flag(parser, "--heads", type=int, default=4, metavar="N", help="attention heads")
    add_flag(parser, "--max-positions", type=int, default=2048, metavar="N",
             help="maximum sequence length")
    add_seed_flag(parser, "seed of the random initialisation")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.corpus is not None:
            require_file(args.corpus, "corpus", ValueError)
        out = build_tiny_causal_lm(
            args.out, corpus_texts(args.corpus), arch=args.arch, vocab_size=args.vocab_size,
            hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads, seed=args.seed,
            max_positions=args.max_positions,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"model": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
