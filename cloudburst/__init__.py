"""cloudburst package."""
