"""Local training backend: TRL GRPO / SFT on CPU or one GPU over the verl parquet and reward.

Entry points: ``python -m verl_recipes.local {grpo,sft} key=value…`` (also
``bash model_train.sh local`` / ``local_sft``) and ``python -m verl_recipes.local.export``.
"""
