"""Key-sequence track data (LogGPT / LogNEO): sequences per block or window, key vocabulary, RL prefixes."""
