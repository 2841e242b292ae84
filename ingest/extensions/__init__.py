"""Extensions of ingest: progress, looking for lost ids when idle, a frozen heap."""
