"""anna package."""
