"""Local trainers of next-key models: the model and tokenizer builder, pretraining."""
