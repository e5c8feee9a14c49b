"""Conversion of original OpenAI Jukebox checkpoints and the old transformers-4.x Hub format."""
