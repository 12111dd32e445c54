"""The one HTTP layer for calls whose address a tenant chooses: webhooks, metric providers, alerts.

Interface (used by webhooks.py, prometheus.py and notifiers.py):

* :class:`Egress`: where the operator may connect. Checked on the RESOLVED address: the host
  is resolved once, every address is checked, and the connection goes to the address that was
  checked (TLS still verifies and sends SNI for the host name), so a DNS answer that changes
  between the check and the connection (rebinding) cannot slip past it. By default link-local
  addresses (169.254.0.0/16, fe80::/10: the cloud metadata services) and the other known
  metadata addresses are refused; operators add deny or allow CIDRs and hosts
  (`canary operator --egress-deny-cidr ...`, see docs/security.md).
* :func:`client`: an ``httpx.AsyncClient`` that enforces an Egress and never follows a
  redirect (a 3xx answer is returned as it is; a redirect would turn a POST to an address the
  policy allows into a GET to one the tenant picked). One pooled client per event loop,
  policy, TLS verification and proxy is shared; :func:`aclose_shared_clients` closes them
  (call it on shutdown).
* :func:`request`: one request with the one retry policy (tenacity): connection failures
  (including connect timeouts), 429 and 5xx except 501 are retried with exponential backoff
  (``backoff`` doubling, capped at ``MAX_BACKOFF``, a short ``Retry-After`` honoured); read
  timeouts and 4xx are not (asking again only adds load). Raises :class:`EgressDenied` for a
  refused address (never retried) and httpx errors as they are; a retried status that kept
  failing is returned as the last response.
* :func:`safe_url`, :func:`clean`, :func:`snippet`: what may be shown of a URL (no userinfo,
  no query) and of a remote body (control characters removed, whitespace collapsed, capped).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

from canary.text import clean
from canary.text import snippet as _snippet

__all__ = [
    "DEFAULT_DENY_CIDRS",
    "DEFAULT_DENY_HOSTS",
    "Egress",
    "EgressDenied",
    "aclose_shared_clients",
    "clean",
    "client",
    "configure",
    "default_egress",
    "request",
    "safe_url",
    "snippet",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DENY_CIDRS = (
    "169.254.0.0/16",  # IPv4 link-local: AWS, GCP, Azure, OpenStack, ... metadata (169.254.169.254)
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
)
DEFAULT_DENY_HOSTS = ("metadata.google.internal", "metadata.azure.internal", "metadata")
MAX_BACKOFF = 2.0
SNIPPET = 100


class EgressDenied(httpx.TransportError):
    """The address of a request is refused by the egress policy (nothing was sent)."""


def _networks(values: Iterable[str | Network]) -> tuple[Network, ...]:
    return tuple(v if isinstance(v, (ipaddress.IPv4Network, ipaddress.IPv6Network))
                 else ipaddress.ip_network(v, strict=False) for v in values)


def _host_matches(host: str, patterns: Iterable[str]) -> bool:
    """`example.com` matches itself; `.example.com` matches every name under it."""
    host = host.lower().rstrip(".")
    for p in patterns:
        p = p.lower().rstrip(".")
        if p.startswith(".") and (host.endswith(p) or host == p[1:]):
            return True
        if host == p:
            return True
    return False


@dataclass(frozen=True)
class Egress:
    """Where outbound calls may go.

    1. A host in `deny_hosts` is refused (`.example.com` covers its subdomains).
    2. An address in `deny_cidrs` is refused unless it is also in `allow_cidrs` (so a narrower
       allow can open one internal range inside a denied one).
    3. With `allow_hosts` or `allow_cidrs` set, only they are reachable: the host must be in
       `allow_hosts` or every address it resolves to in `allow_cidrs`.

    Every address a name resolves to must pass (a name with one good and one metadata address is
    refused). IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
    """

    deny_cidrs: tuple[Network, ...] = field(default_factory=lambda: _networks(DEFAULT_DENY_CIDRS))
    allow_cidrs: tuple[Network, ...] = ()
    deny_hosts: tuple[str, ...] = DEFAULT_DENY_HOSTS
    allow_hosts: tuple[str, ...] = ()

    @classmethod
    def build(cls, *, deny_cidrs: Iterable[str] = (), allow_cidrs: Iterable[str] = (),
              deny_hosts: Iterable[str] = (), allow_hosts: Iterable[str] = (),
              defaults: bool = True) -> Egress:
        """The defaults plus the operator's lists (`defaults=False`: only the lists given)."""
        return cls(
            deny_cidrs=_networks([*(DEFAULT_DENY_CIDRS if defaults else ()), *deny_cidrs]),
            allow_cidrs=_networks(allow_cidrs),
            deny_hosts=tuple([*(DEFAULT_DENY_HOSTS if defaults else ()), *deny_hosts]),
            allow_hosts=tuple(allow_hosts),
        )

    @property
    def allowlist(self) -> bool:
        return bool(self.allow_hosts or self.allow_cidrs)

    def check_host(self, host: str) -> None:
        if _host_matches(host, self.deny_hosts):
            raise EgressDenied(f"host {host} is refused by the egress policy")

    def check_address(self, host: str, address: Address) -> None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        allowed = any(address in net for net in self.allow_cidrs)
        if not allowed and any(address in net for net in self.deny_cidrs):
            raise EgressDenied(f"address {address} of {host} is refused by the egress policy "
                               "(link-local and cloud metadata addresses are refused by default)")
        if self.allowlist and not allowed and not _host_matches(host, self.allow_hosts):
            raise EgressDenied(f"address {address} of {host} is not in the egress allow list")

    async def resolve(self, host: str, port: int) -> Address:
        """The address to connect to: every address of `host` checked, the first one returned."""
        self.check_host(host)
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            self.check_address(host, literal)
            return literal
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise httpx.ConnectError(f"cannot resolve {host}: no address")
        for address in addresses:
            self.check_address(host, address)
        return addresses[0]


_default = Egress()


def default_egress() -> Egress:
    return _default


def configure(egress: Egress) -> None:
    """Set the policy used by clients made without an explicit one (operator start-up)."""
    global _default
    _default = egress


class _CheckedTransport(httpx.AsyncBaseTransport):
    """Resolve, check, then connect to the checked address (Host header and SNI keep the name)."""

    def __init__(self, egress: Egress, inner: httpx.AsyncBaseTransport, *, via_proxy: bool = False):
        self.egress = egress
        self.inner = inner
        self.via_proxy = via_proxy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if self.via_proxy:
            # the proxy resolves the target; we can check its name only (the proxy's own address is
            # checked by the transport that connects to it)
            self.egress.check_host(host)
            return await self.inner.handle_async_request(request)
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        address = await self.egress.resolve(host, port)
        if str(address) != host.strip("[]"):
            request.url = request.url.copy_with(host=str(address))
            if request.url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _make_client(egress: Egress, verify: bool, proxy: str | None, timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
    if proxy:
        proxy_url = httpx.URL(proxy)
        if proxy_url.host:
            egress.check_host(proxy_url.host)
        inner = httpx.AsyncHTTPTransport(verify=verify, proxy=proxy, limits=limits)
        transport: httpx.AsyncBaseTransport = _CheckedTransport(egress, inner, via_proxy=True)
    else:
        transport = _CheckedTransport(egress, httpx.AsyncHTTPTransport(verify=verify, limits=limits))
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def client(*, verify: bool = True, proxy: str | None = None, egress: Egress | None = None,
           timeout: float = 10.0) -> httpx.AsyncClient:
    """A pooled client of the running loop that enforces `egress` (default: the configured
    policy) and never follows redirects. Do not close it: `aclose_shared_clients` does."""
    egress = egress or _default
    per_loop = _shared.setdefault(asyncio.get_running_loop(), {})
    key = (id(egress), verify, proxy)
    http = per_loop.get(key)
    if http is None or http.is_closed:
        http = _make_client(egress, verify, proxy, timeout)
        per_loop[key] = http
    return http


async def aclose_shared_clients() -> None:
    """Close the shared clients of the running loop (operator shutdown)."""
    for http in _shared.pop(asyncio.get_running_loop(), {}).values():
        await http.aclose()


# ---- the one retry policy ----------------------------------------------------------------------


class _RetryableStatus(Exception):
    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def retryable_status(code: int) -> bool:
    return code == 429 or (code >= 500 and code != 501)


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, EgressDenied):
        return False
    if isinstance(exc, _RetryableStatus | httpx.ConnectTimeout):
        return True
    if isinstance(exc, httpx.TimeoutException):
        return False  # the server may still be working: asking again only adds load
    return isinstance(exc, httpx.TransportError)


class _Backoff(wait_base):
    """Exponential backoff (base, 2*base, ... up to cap) that honours a short Retry-After."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap = base, cap

    def __call__(self, retry_state: Any) -> float:
        wait = self.base * 2 ** (retry_state.attempt_number - 1)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _RetryableStatus):
            after = exc.response.headers.get("Retry-After", "")
            if after.strip().isdigit():
                wait = float(after)
        return max(0.0, min(wait, self.cap))


@dataclass
class Attempts:
    """How many attempts a `request` made (set as it goes, readable after an exception)."""

    count: int = 0


async def request(http: httpx.AsyncClient, method: str, url: str, *, retries: int = 0,
                  backoff: float = 0.2, timeout: float | None = None, attempts: Attempts | None = None,
                  retry_status: bool = True, **kwargs: Any) -> httpx.Response:
    """One request with the one retry policy (see the module doc); redirects are never followed."""
    counter = attempts if attempts is not None else Attempts()
    if timeout is not None:
        kwargs["timeout"] = httpx.Timeout(timeout)
    kwargs["follow_redirects"] = False

    async def once() -> httpx.Response:
        counter.count += 1
        response = await http.request(method, url, **kwargs)
        if retry_status and retryable_status(response.status_code):
            await response.aread()
            raise _RetryableStatus(response)
        return response

    try:
        async for attempt in AsyncRetrying(stop=stop_after_attempt(max(0, retries) + 1),
                                           wait=_Backoff(backoff, MAX_BACKOFF),
                                           retry=retry_if_exception(_is_retryable), reraise=True):
            with attempt:
                return await once()
    except _RetryableStatus as exc:
        return exc.response
    raise AssertionError("unreachable")  # pragma: no cover


# ---- what may be shown -----------------------------------------------------------------------

def snippet(text: str, limit: int = SNIPPET) -> str:
    """The start of a remote body as it may be shown: cleaned, at most `limit` characters."""
    return _snippet(text, limit)


def safe_url(url: str) -> str:
    """`url` without userinfo and query (they may hold credentials)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return clean(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
    except ValueError:
        return "<invalid url>"


def redact(text: str, secrets: Mapping[str, str] | Iterable[str]) -> str:
    """`text` with every non-empty secret value replaced by ***."""
    for value in secrets.values() if isinstance(secrets, Mapping) else secrets:
        if value:
            text = text.replace(value, "***")
    return text
