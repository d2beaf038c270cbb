"""Local trainers of chat models: TRL SFT and GRPO over the verl parquet, teacher rationales."""
