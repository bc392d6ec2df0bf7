"""Placeholder: the Redis adapter issue provides the redis_server fixture."""
