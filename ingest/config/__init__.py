"""Settings and arguments turned into checked values, what a crawl needs checked before its
first request, the API keys, and secrets shown safely."""
