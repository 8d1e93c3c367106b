"""Air-gapped sites: the cache as an OCI image layout, out and back in.

::

    names.py         how images are named in index.json (ref.name, the mirror's annotations)
    descriptors.py   descriptors, index.json, what a manifest refers to (pure)
    content.py       the ContentSource (export) and ImportSink (import) protocols
    selection.py     --image / --file / --upstream / --repository
    graph.py         the export plan: each image's graph and referrers
    summary.py       registry-mirror-export.json and SHA256SUMS
    writer.py        directory / tar / tar.zst targets, atomic, streaming
    export.py        export_layout(): source -> layout, incremental with --since
    reader.py        directory / tar / tar.zst / stdin layouts, streaming, spool for odd orders
    layout_graph.py  each index.json entry's manifests, checked, and blobs
    importer.py      import_layout(): layout -> sink, verified, idempotent, resumable
    errors.py        the exception tree

The commands' progress reporting is :mod:`mirror.progress`, shared with
``warm`` and ``verify``.
"""
