"""Training data (x265 coding, corpus, pairs), the training stages, metrics and evaluation."""
