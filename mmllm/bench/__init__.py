"""``mmllm bench``: our model against Hugging Face peers of matched size, in one run."""
