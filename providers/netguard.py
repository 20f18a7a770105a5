"""Resolve an administrator's host once, refuse blocked networks, connect to what was checked.

Resolving, checking and then letting a library resolve again would let DNS answer differently
the second time (DNS rebinding), so the socket is connected to the very address checked here.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from typing import Any

from providers.config import IPNetwork, NetworkPolicy, ServerAddress
from providers.errors import (
    AddressBlocked,
    ConnectionRefused,
    ConnectionTimedOut,
    HostNotFound,
    ProviderError,
)

logger = logging.getLogger(__name__)

Address = tuple[socket.AddressFamily, Any]  # (family, sockaddr) as getaddrinfo gives them
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The one DNS lookup per connection; a seam so tests can point a name at loopback.
getaddrinfo = socket.getaddrinfo

# Resolver answers that will not change on a retry; anything else (EAI_AGAIN...) might.
_PERMANENT_DNS_ERRORS = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def resolve_allowed(host: str, port: int, policy: NetworkPolicy) -> list[Address]:
    """The addresses of host, in resolver order, without those in blocked networks."""
    addresses = _resolve(host, port)
    allowed = [a for a in addresses if _blocking_network(_ip_of(a), policy) is None]
    if not allowed:
        ip = _ip_of(addresses[0])
        raise _blocked(host, ip, _blocking_network(ip, policy))
    return allowed


def connect(server: ServerAddress, policy: NetworkPolicy) -> socket.socket:
    """A connected TCP socket to an allowed address of server.host, timeout set."""
    error: ProviderError | None = None
    for family, sockaddr in resolve_allowed(server.host, server.port, policy):
        try:
            return _connect_one(family, sockaddr, server.timeout)
        except OSError as exc:
            # Like socket.create_connection: a host with IPv6 and IPv4 may answer on one only.
            error = _connect_error(exc, server)
            logger.debug("connecting to %s at %s failed: %s", server.host, sockaddr[0], exc)
    assert error is not None  # resolve_allowed never returns an empty list
    raise error


def normalise_ip(text: str) -> IPAddress:
    """The address to check: ::ffff:127.0.0.1 is 127.0.0.1 and must be judged as such."""
    ip = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _resolve(host: str, port: int) -> list[Address]:
    try:
        infos = getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise _host_not_found(host, exc) from exc
    addresses: list[Address] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise HostNotFound(f"{host} has no IP address: check the server name.")
    return addresses


def _ip_of(address: Address) -> IPAddress:
    return normalise_ip(address[1][0])


def _blocking_network(ip: IPAddress, policy: NetworkPolicy) -> IPNetwork | None:
    return next((net for net in policy.blocked_networks if ip in net), None)


def _connect_one(family: socket.AddressFamily, sockaddr: Any, timeout: float) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _blocked(host: str, ip: IPAddress, network: IPNetwork | None) -> AddressBlocked:
    where = f"{host} resolves to {ip}, which" if host != str(ip) else f"{ip}"
    return AddressBlocked(f"{where} is in a blocked network ({network}).")


def _host_not_found(host: str, exc: Exception) -> HostNotFound:
    code = exc.errno if isinstance(exc, socket.gaierror) else socket.EAI_NONAME
    reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
    return HostNotFound(
        f"{host} could not be found ({reason}): check the server name.",
        permanent=code in _PERMANENT_DNS_ERRORS,
    )


def _connect_error(exc: OSError, server: ServerAddress) -> ProviderError:
    where = f"{server.host} port {server.port}"
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionRefused(f"Nothing answers on {where}: check the port.")
    if isinstance(exc, TimeoutError):
        return ConnectionTimedOut(
            f"{where} did not answer within {server.timeout:g} s: check the server name and "
            "port, and that a firewall lets Postroom through."
        )
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return ConnectionTimedOut(f"{where} cannot be reached ({exc.strerror}): check the host.")
    return ConnectionRefused(f"Could not connect to {where} ({exc.strerror or exc}).")
