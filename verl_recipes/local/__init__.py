"""Local training backend: CPU or one GPU, the same parquet and reward as the verl recipes.

* :mod:`verl_recipes.local.chat` — chat models: TRL SFT and GRPO (``python -m verl_recipes.local
  {grpo,sft} key=value…``, also ``bash model_train.sh local`` / ``local_sft``) and teacher
  rationales (``python -m logdata rationales``);
* :mod:`verl_recipes.local.keyseq` — next-key models: the model builder and pretraining
  (``python -m verl_recipes.local.keyseq.pretrain``);
* :mod:`verl_recipes.local.export` — checkpoints of either backend to a Hugging Face folder.
"""
