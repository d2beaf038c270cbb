"""Next-key language models over log keys: the key tokenizer and the model configurations.

The tokenizer has exactly one token per vocabulary entry (``vocab.json``: ``<pad> <bos> <eos>
<unk>`` then the training keys) with the same ids, over a ``tokenizers`` WordLevel model and a
whitespace-split pre-tokenizer, so ``"E5 E12 E5"`` encodes to three ids and an unseen key to
``<unk>``. Its chat template renders a conversation as ``<bos>`` followed by the message contents,
so the RL prompts (one user message of space-separated keys) reach the model exactly as in
pretraining.

Architectures live in one table, :data:`ARCHITECTURES`:

==============  ===========================================================================
name            model
==============  ===========================================================================
loggpt          LogGPT's GPT-2 (6 layers, 6 heads, width 60, 512 positions), from scratch
gpt_neo_tiny    a 2-layer GPT-Neo of width 64 for tests and CPU smoke runs
gpt_neo_1.3b    LogNEO's GPT-Neo 1.3B shape (24 layers, width 2048, 16 heads), for clusters only
==============  ===========================================================================

All are built offline from a config (random initialisation); nothing is downloaded.

**The vocabulary travels with the model.** A model built from a ``vocab.json`` file records it in
its config, as the extra field :data:`VOCAB_FIELD` of ``config.json``: ``{"path": <the path
used>, "sha256": <sha256 of the file>}`` (:func:`vocab_record`). Because it lives in the config,
every re-save keeps it with no extra file to copy: :func:`save_model`, ``verl_recipes.local.export``
(tested), and verl's FSDP checkpoint manager, which writes the config it loaded to
``huggingface/config.json``. ``validation/keyseq_detect.py`` compares it with the
``vocab.json`` beside the test sequences (:func:`model_vocab`) and refuses data built with another
vocabulary: key ids of different datasets collide (``E5`` of HDFS is not ``E5`` of BGL).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from logdata.errors import LogDataError
from logdata.io import sha256_file
from logdata.keyseq.vocab import BOS, EOS, PAD, UNK, KeyVocab

logger = logging.getLogger(__name__)

#: LogGPT's context (``max_lens``): GPT-2 positions and the longest sequence it keeps.
LOGGPT_CONTEXT = 512
#: Extra field of the model's ``config.json``: the ``vocab.json`` the model was built with.
VOCAB_FIELD = "keyseq_vocab"

#: Renders ``[{"role": "user", "content": "E1 E2"}]`` as ``<bos>E1 E2``: no role markers, the same
#: text the model saw in pretraining.
CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}"


def build_tokenizer(vocab: KeyVocab, model_max_length: int) -> Any:
    """A ``PreTrainedTokenizerFast`` with one token per key and the vocabulary's ids.

    ``add_special_tokens`` does not add ``<bos>``: callers prepend it explicitly (the chat
    template does), so ``encode("E1 E2")`` is exactly the keys.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(WordLevel(vocab=vocab.index, unk_token=UNK))
    core.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=model_max_length, padding_side="right",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _loggpt(vocab_size: int, context: int, ids: dict[str, int]) -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab_size, n_positions=context, n_embd=60, n_layer=6, n_head=6,
                      **ids)


def _gpt_neo(hidden: int, layers: int, heads: int, window: int) -> Callable[..., Any]:
    def make(vocab_size: int, context: int, ids: dict[str, int]) -> Any:
        from transformers import GPTNeoConfig

        return GPTNeoConfig(
            vocab_size=vocab_size, max_position_embeddings=context, hidden_size=hidden,
            num_layers=layers, num_heads=heads, attention_types=[[["global", "local"], layers // 2]],
            window_size=window, **ids,
        )

    return make


def _llama(hidden: int, layers: int, heads: int, intermediate: int) -> Callable[..., Any]:
    def make(vocab_size: int, context: int, ids: dict[str, int]) -> Any:
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size, max_position_embeddings=context, hidden_size=hidden,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            intermediate_size=intermediate, tie_word_embeddings=False, **ids,
        )

    return make


#: name → (config factory(vocab_size, context, special ids), default context, note)
ARCHITECTURES: dict[str, tuple[Callable[..., Any], int, str]] = {
    # LogGPT: n_positions = max_lens = 512 (args/*_config.py, model/initGPT.py)
    "loggpt": (_loggpt, LOGGPT_CONTEXT, "GPT-2 6 layers / 6 heads / width 60 / 512 positions"),
    "gpt_neo_tiny": (_gpt_neo(64, 2, 4, 256), 1024, "GPT-Neo 2 layers / width 64 (tests)"),
    "gpt_neo_1.3b": (_gpt_neo(2048, 24, 16, 256), 2048, "GPT-Neo 1.3B shape (LogNEO, clusters)"),
    # verl's logneo_ppo needs a shape vLLM serves and verl's engine reads (num_key_value_heads):
    # Llama; GPT-2 and GPT-Neo train locally only (verl_recipes/logneo_ppo/README.md)
    "llama_tiny": (_llama(128, 2, 2, 256), 256, "Llama 2 layers / width 128 (verl on CPU, tests)"),
    "llama_1.3b": (_llama(2048, 24, 16, 5504), 2048, "Llama 1.3B shape (logneo_ppo on clusters)"),
}


def model_config(arch: str, vocab: KeyVocab, context: int | None = None) -> Any:
    """The transformers config of ``arch`` sized to ``vocab``.

    Raises:
        LogDataError: On an unknown architecture.
    """
    if arch not in ARCHITECTURES:
        raise LogDataError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    factory, default_context, _ = ARCHITECTURES[arch]
    ids = {"bos_token_id": vocab.id_of(BOS), "eos_token_id": vocab.id_of(EOS),
           "pad_token_id": vocab.id_of(PAD)}
    return factory(len(vocab), context or default_context, ids)


def vocab_record(vocab_file: Path) -> dict[str, str]:
    """What a model stores about its vocabulary file: the path used and the file's sha256."""
    return {"path": str(vocab_file), "sha256": sha256_file(vocab_file)}


def model_vocab(model_dir: Path) -> dict[str, str] | None:
    """The vocabulary record in ``model_dir/config.json`` (:data:`VOCAB_FIELD`), or None.

    None for models saved before the record existed (or built without a vocabulary file).

    Raises:
        LogDataError: When ``config.json`` is missing or unreadable.
    """
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LogDataError(f"no model in {model_dir} (cannot read config.json: {exc})") from None
    record = config.get(VOCAB_FIELD) if isinstance(config, dict) else None
    if isinstance(record, dict) and isinstance(record.get("sha256"), str):
        return {"path": str(record.get("path", "")), "sha256": record["sha256"]}
    return None


def build_keyseq_model(vocab: KeyVocab, arch: str, out_dir: Path | None = None,
                       context: int | None = None, seed: int = 0,
                       vocab_file: Path | None = None) -> tuple[Any, Any]:
    """Randomly initialise a next-key model and its key tokenizer (saved when ``out_dir``).

    Args:
        vocab: The key vocabulary (``vocab.json`` of the sequence build).
        arch: A key of :data:`ARCHITECTURES`.
        out_dir: When given, the model (safetensors) and tokenizer are saved there.
        context: Context length (positions); the architecture's default when None.
        seed: Seed of the initialisation.
        vocab_file: The ``vocab.json`` that ``vocab`` was loaded from; its path and sha256 are
            stored in the model's config (:data:`VOCAB_FIELD`) so detection can check the data.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        LogDataError: When ``vocab_file`` does not hold ``vocab``.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = model_config(arch, vocab, context)
    if vocab_file is not None:
        if KeyVocab.load(vocab_file).tokens != vocab.tokens:
            raise LogDataError(f"{vocab_file} is not the vocabulary the model is built with")
        setattr(config, VOCAB_FIELD, vocab_record(Path(vocab_file)))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    tokenizer = build_tokenizer(vocab, model_max_length=_context_of(config))
    if out_dir is not None:
        save_model(model, tokenizer, Path(out_dir))
    return model, tokenizer


def _context_of(config: Any) -> int:
    """Positions of a GPT-2 or GPT-Neo config."""
    return int(getattr(config, "n_positions", None) or config.max_position_embeddings)


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Save model (safetensors) and tokenizer in Hugging Face format."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_model(model_dir: Path, device: str = "cpu") -> tuple[Any, Any]:
    """Load a saved next-key model and its tokenizer (``trust_remote_code`` off), in eval mode.

    Raises:
        LogDataError: When the folder holds no model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(model_dir) / "config.json").is_file():
        raise LogDataError(f"no model in {model_dir} (config.json missing)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=False).to(device)
    model.eval()
    return model, tokenizer


def pad_batch(batch: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """Right-pad token id lists into ``(input_ids, attention_mask)`` long tensors.

    >>> ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return input_ids, mask


def keys_to_ids(tokenizer: Any, keys: list[str]) -> list[int]:
    """Token ids of raw keys (unseen → ``<unk>``), without specials.

    >>> from logdata.keyseq.vocab import KeyVocab
    >>> tok = build_tokenizer(KeyVocab.build([["E1", "E2"]]), 16)
    >>> keys_to_ids(tok, ["E2", "E1", "E7"])
    [5, 4, 3]
    """
    return tokenizer.convert_tokens_to_ids([str(k) for k in keys])
