"""What a refusal teaches about the limit, in every mode: pure, on a bucket's state (pacing
knows nothing of it)."""
