"""In-process cache machinery: single-flight downloads and the size-bounded index."""
