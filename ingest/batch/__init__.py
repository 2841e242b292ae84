"""Many ids in one request: the endpoint's settings, the size the API takes, the job's ids
fed as batches, and a batch's answer matched to its ids."""
