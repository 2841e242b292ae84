"""What a crawl shows people: its figures, counted once; progress lines and the summary; the
terminal bar; durations said for people."""
