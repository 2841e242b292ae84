"""How a crawl stops: waits a graceful stop cuts short, requests given back, and why a crawl
ends early, with the exit code of each reason."""
