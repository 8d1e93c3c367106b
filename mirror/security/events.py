"""What client authentication reports, for counting: the labels are closed sets.

:class:`SecurityEvents` is implemented by the app's metrics object. Proposed
metric names (phase 2 adds them to :mod:`mirror.metrics`):

==============================================  =========================================
``mirror_client_auth_failures_total``           ``credential`` x ``reason`` (below)
``mirror_client_login_throttled_total``         ``outcome``: delayed, refused
``mirror_client_access_refused_total``          ``answer``: challenge (401), denied (403)
``mirror_client_rate_limited_total``            ``client``: user, address
``mirror_tokens_issued_total``                  ``grant``: anonymous, basic, password, refresh_token
``mirror_tls_reloads_total``                    ``result``: ok, error
``mirror_tls_certificate_expiry_timestamp_seconds``  the serving certificate's notAfter (gauge)
==============================================  =========================================

The label values are the ``Literal`` types below (``typing.get_args`` lists
them). Never a user name, address, repository or token in a label: those go to
the log line of a failed login (user and address only, never the password).
"""

from __future__ import annotations

from typing import Literal, Protocol

Credential = Literal["password", "token", "refresh_token", "header"]
FailureReason = Literal[
    "unknown_user", "wrong_password", "malformed", "expired_token", "invalid_token", "no_users"
]
ThrottleOutcome = Literal["delayed", "refused"]
RefusalAnswer = Literal["challenge", "denied"]
ClientKind = Literal["user", "address"]
Grant = Literal["anonymous", "basic", "password", "refresh_token"]


class SecurityEvents(Protocol):
    """Counters of client authentication, authorization and limits."""

    def auth_failed(self, credential: Credential, reason: FailureReason) -> None:
        """Credentials were refused (``header``: an Authorization header that cannot be read)."""

    def login_throttled(self, outcome: ThrottleOutcome) -> None:
        """A credential check was delayed, or refused, because of earlier failures."""

    def access_refused(self, answer: RefusalAnswer) -> None:
        """A request was answered 401 with a challenge, or 403 DENIED, by the rules."""

    def rate_limited(self, client: ClientKind) -> None:
        """A request was answered 429 by the per-client rate limit."""

    def token_issued(self, grant: Grant) -> None:
        """The token endpoint issued an access token."""
