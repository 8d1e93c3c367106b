"""The pull-through proxy: one store per resource (blobs, manifests, tags), cache first."""
