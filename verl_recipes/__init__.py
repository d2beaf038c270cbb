"""VeRL recipes (Hydra yaml deltas over ppo_trainer) and the local training backend."""
