"""The ``keyseq_sft`` recipe: next-key cross-entropy pretraining on verl's SFT trainer."""
