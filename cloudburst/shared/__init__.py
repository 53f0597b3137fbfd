"""cloudburst/shared package."""
