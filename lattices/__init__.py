"""lattices package."""
