"""The pull-through proxy: one store per resource, the cache first, the upstream on a miss.

As in CNCF distribution's ``registry/proxy``: :mod:`~mirror.proxy.blobs`
(blob store), :mod:`~mirror.proxy.manifests` (manifests by digest),
:mod:`~mirror.proxy.tags` (manifests by tag, under the rules of
:mod:`~mirror.proxy.freshness`) and :mod:`~mirror.proxy.listings` (tag
lists, referrers). Blob downloads are single-flight and streamed:
:mod:`~mirror.proxy.downloads` starts and joins them,
:mod:`~mirror.proxy.download` is one download's state that followers read,
:mod:`~mirror.proxy.transfer` moves its bytes. Nothing here touches an HTTP
request or response of a client: the routes turn these answers into HTTP.
"""
