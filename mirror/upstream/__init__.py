"""HTTP client for upstream registries (auth, redirects, retries); never touches storage."""
