"""Template track data (RationAnomaly): label patch, template splits, sessions, prompts, VeRL parquet."""
