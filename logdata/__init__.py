"""Raw logs to parsed templates, labels, datasets and VeRL parquet."""
