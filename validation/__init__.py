"""Prediction, evaluation and detection for trained models (runnable by path)."""
