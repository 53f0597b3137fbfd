"""Routing tier: which shards own a key, membership and failure detection."""
