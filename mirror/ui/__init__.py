"""The web UI at ``/ui/``: what the cache holds, searchable, and admin actions.

Server-rendered HTML (Jinja2, autoescaped) with one small script for copy
buttons, the ``/`` shortcut and live download counts; no asset comes from
anywhere but the mirror. The pages render from a read-only view-model
(:mod:`mirror.ui.model`), so they never touch storage; see docs/ui.md.

::

    model.py          the view-model protocol (CacheView, CacheActions, Viewer) and its values
    query.py          search (substring, glob), sort and paging of the repository listing
    site.py           create_ui_app() / mount_ui(): the sub-application, headers, static files
    pages.py          GET pages and fills.json
    actions.py        POST purge and pin, for admins, same-origin only
    render.py         Jinja2 environment and static assets
    keys.py           what handlers read from request.app; ViewerLookup
    errors.py         HTML error pages
    pull_commands.py  docker, podman and containerd commands for an image
    format.py         sizes, times and digests as the pages show them
    live.py           LiveView / LiveActions: the view-model over the running mirror
    catalog.py        repositories, tags and manifests of the cache, kept in memory
    live_tags.py      one repository's tags for its page; the signature hook
    images.py         what a stored manifest tells the pages (platforms, annotations)
    viewers.py        who is an admin until client authentication: the admin token
"""
