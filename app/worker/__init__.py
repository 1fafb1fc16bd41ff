"""The verification worker: the database job queue, the protocol, and the worker loop."""
