"""Usage statistics the mirror keeps in its cache storage (per-repository pulls)."""
