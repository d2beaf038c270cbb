"""Local trainers of next-key models: the model and tokenizer builder, pretraining, RL fine-tuning.

* :mod:`.model`: the one-token-per-key tokenizer and the architectures (LogGPT's GPT-2, GPT-Neo);
* :mod:`.pretrain`: cross-entropy pretraining on normal key sequences;
* :mod:`.rl`: RL fine-tuning in plain PyTorch at CPU scale, ``ppo`` (LogNEO: critic, GAE, clipped
  objective, KL penalty to the pretrained model, position-aware ``logneo`` reward, CE
  regulariser) or ``reinforce`` (LogGPT: baseline-free, ``±1`` per key), with
  :mod:`.rl_rollout` (episodes, padded batches, KV-cache sampling, token rewards) and
  :mod:`.rl_losses` (GAE and the losses). Commands, ``metrics.jsonl`` fields, the ablation and
  the benchmark: ``verl_recipes/local/keyseq/README.md``.
"""
