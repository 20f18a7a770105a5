"""HTTP through the network guard: OAuth2 providers and webhooks are URLs an administrator
typed, so every connection is resolved and checked against the blocked networks first."""

from __future__ import annotations

import httpcore
import httpx

from providers import netguard, tls
from providers.config import NetworkPolicy, ServerAddress


class _GuardedBackend(httpcore.SyncBackend):
    """Connects only to addresses netguard allows, and to the very address it checked.

    TLS still verifies the host name: httpcore takes SNI from the URL, not from here.
    """

    def __init__(self, policy: NetworkPolicy) -> None:
        self._policy = policy

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        error: Exception | None = None
        for _family, sockaddr in netguard.resolve_allowed(host, port, self._policy):
            try:
                return super().connect_tcp(
                    sockaddr[0], port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None  # resolve_allowed never returns an empty list
        raise error


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport that connects only to addresses the network policy allows, checked
    at connect time (a DNS answer cannot point it somewhere else after the check)."""

    def __init__(self, policy: NetworkPolicy) -> None:
        super().__init__()
        context = tls.client_context(ServerAddress("https", 443, "ssl"))
        self._pool = httpcore.ConnectionPool(
            ssl_context=context, network_backend=_GuardedBackend(policy)
        )
