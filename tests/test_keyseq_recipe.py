"""The keyseq_sft recipe composes against the installed verl; its dataset feeds verl's collator."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from logdata.keyseq.vocab import KeyVocab
from verl_recipes import compose
from verl_recipes.keyseq_sft.dataset import KeySeqSFTDataset
from verl_recipes.local.keyseq.model import build_keyseq_model


@pytest.fixture(scope="module")
def keyseq_model(keyseq_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("keyseq_model")
    build_keyseq_model(KeyVocab.load(keyseq_data / "vocab.json"), "gpt_neo_tiny", out, context=64)
    return out


def test_keyseq_sft_composes_and_validates(keyseq_data, keyseq_model):
    cfg = compose.compose_recipe("keyseq_sft", [f"model.path={keyseq_model}",
                                                f"logrl.data_dir={keyseq_data}"])
    compose.validate_recipe(cfg)
    assert compose.trainer_kind(cfg) == "sft"
    assert cfg.data.custom_cls.path == "pkg://verl_recipes.keyseq_sft.dataset"
    assert cfg.data.train_files == str(keyseq_data / "train.parquet")
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.data.train_batch_size == 16
    assert "hf_model" in cfg.checkpoint.save_contents


def test_verl_builds_our_dataset_and_collates_it(keyseq_data, keyseq_model):
    from verl.trainer.sft_trainer import create_sft_dataset
    from verl.utils.dataset.dataset_utils import SFTTensorCollator
    from verl.utils.tokenizer import hf_tokenizer

    cfg = compose.compose_recipe("keyseq_sft", [f"model.path={keyseq_model}",
                                                f"logrl.data_dir={keyseq_data}"])
    tokenizer = hf_tokenizer(str(keyseq_model))
    dataset = create_sft_dataset(cfg.data.train_files, cfg.data, tokenizer, None)
    assert isinstance(dataset, KeySeqSFTDataset)
    train = pd.read_parquet(keyseq_data / "train.parquet")
    assert len(dataset) == len(train)
    item = dataset[0]
    row = train.iloc[0]
    expected = [tokenizer.bos_token_id, *tokenizer.convert_tokens_to_ids(list(row["keys"]))]
    if row["chunk"] == row["n_chunks"] - 1:
        expected.append(tokenizer.eos_token_id)
    assert item["input_ids"].tolist() == expected
    assert item["loss_mask"].tolist() == [0] + [1] * (len(expected) - 1)
    batch = SFTTensorCollator(cfg.data.pad_mode)([dataset[i] for i in range(4)])
    assert batch["input_ids"].is_nested


def test_dataset_right_padding_and_length_error(keyseq_data, keyseq_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(keyseq_model)
    files = [str(keyseq_data / "train.parquet")]
    padded = KeySeqSFTDataset(files, tokenizer, {"pad_mode": "right", "max_length": 8})[0]
    assert padded["input_ids"].shape == torch.Size([8])
    assert padded["attention_mask"].sum() == padded["loss_mask"].sum() + 1
    with pytest.raises(ValueError, match="max_length"):
        KeySeqSFTDataset(files, tokenizer, {"max_length": 2, "truncation": "error"})[0]


def test_init_only_model_loads_and_matches_the_vocabulary(keyseq_data, tmp_path, capsys):
    from verl_recipes.local.keyseq.model import load_model
    from verl_recipes.local.keyseq.pretrain import main

    assert main(["--init-only", "--arch", "gpt_neo_tiny", "--data", str(keyseq_data), "--out",
                 str(tmp_path / "init")]) == 0
    model, tokenizer = load_model(tmp_path / "init")
    vocab = KeyVocab.load(keyseq_data / "vocab.json")
    assert tokenizer.get_vocab() == vocab.index
    assert model.config.max_position_embeddings == 5  # the data's context (meta.json)
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error:")


def test_rl_parquet_loads_in_verl_rlhf_dataset(keyseq_data, keyseq_model, tmp_path):
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    tokenizer = AutoTokenizer.from_pretrained(keyseq_model)
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 64,
                               "filter_overlong_prompts": True, "cache_dir": str(tmp_path),
                               "filter_overlong_prompts_workers": 1})
    path = keyseq_data / "rl_train.parquet"
    dataset = RLHFDataset(str(path), tokenizer, config)
    frame = pd.read_parquet(path)
    assert len(dataset) == len(frame)
    batch = collate_fn([dataset[i] for i in range(2)])
    prompt = list(batch["raw_prompt"][0])
    assert prompt == [{"role": "user", "content": frame["prompt"].iloc[0][0]["content"]}]
    # the key tokenizer's chat template renders <bos> + the keys, as in pretraining
    ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    keys = prompt[0]["content"].split()
    assert list(ids) == [tokenizer.bos_token_id, *tokenizer.convert_tokens_to_ids(keys)]
    truth = frame["reward_model"].iloc[0]["ground_truth"].split()
    assert len(keys) + len(truth) == len(pd.read_parquet(keyseq_data / "train.parquet")
                                         ["keys"].iloc[0])
