"""Pacing requests to what the API allows: the bucket, the server's word, where state lives."""
