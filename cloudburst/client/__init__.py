"""cloudburst/client package."""
