# Sourced by scripts/e2e.sh and scripts/e2e_multinode.sh: the small GRPO shape both CPU runs use
# on top of `model_train.sh rationanomaly_grpo --cpu` (4 prompts x 4 rollouts, 96 response tokens,
# mini-batches of 2 prompts), so the single-node and the multi-node run train the same way.
# shellcheck disable=SC2034  # used by the scripts that source this file
E2E_GRPO_SHAPE=(
  actor_rollout_ref.model.enable_gradient_checkpointing=false
  data.train_batch_size=4 actor_rollout_ref.rollout.n=4
  actor_rollout_ref.actor.ppo_mini_batch_size=2
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8
  data.max_prompt_length=512 data.max_response_length=96
  actor_rollout_ref.rollout.max_model_len=1024
  actor_rollout_ref.rollout.max_num_batched_tokens=2048
  trainer.val_before_train=false "trainer.logger=[console,file]"
)
