"""The mirror's own front door: TLS, client authentication, access rules, limits.

::

    tls.py             the server SSLContext; certificate reload on file change (sni_callback)
    certificates.py    checks of the certificate files (chain order, key, validity)
    htpasswd.py        users from an htpasswd file (bcrypt only), re-read when it changes
    keys.py            the token signing key: loaded, or made (mode 0600) when absent
    tokens.py          Docker-style access and refresh JWTs: issue and verify
    rules.py           access rules: first match wins, then the default
    challenge.py       Authorization parsing, WWW-Authenticate challenges
    limits.py          per-client rate limit, failed-login slowdown (bounded, in memory)
    gate.py            the client-auth middleware (and the rate-limit one)
    token_endpoint.py  GET/POST /auth/token, as docker, containerd, podman, skopeo call it
    events.py          what is counted (the metrics' interface, closed label sets)

Settings come from :mod:`mirror.config_security`, which checks every file
these modules use at load time. At run time the modules re-read only what
must follow changes without a restart: the certificate files and the
htpasswd file (and a key file they make once). Credentials are never logged
and never leave the process: nothing here talks to an upstream.
"""
