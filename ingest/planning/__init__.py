"""A job planned before any request: how many requests, how long, and which days they fall on."""
