"""Training: datasets, the training loop and trials. Imports torch; never imported by the API
request path."""
