"""Pacing: the rates, the token bucket's booking and its state; nothing about 429s."""
