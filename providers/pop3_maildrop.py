"""Reading a POP3 maildrop by UIDL, one message at a time, and deleting what was stored.

RFC 1939 numbers messages per session only; UIDL is what stays the same across sessions, so it
is the checkpoint. Deletions (DELE) take effect only when the session ends with QUIT (the
UPDATE state); a session that breaks before that deletes nothing.
"""

from __future__ import annotations

import contextlib
import poplib
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from providers.config import Credentials, ServerAddress
from providers.errors import MessageUnreadable, ProtocolError, server_said
from providers.pop3 import mapped_errors

CRLF = b"\r\n"
# Read size while skipping the rest of a reply we gave up on.
_SKIP_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Pop3Message:
    number: int  # message number in this session
    uidl: str
    size: int  # octets as LIST reports them (CRLF line ends, before dot-stuffing)


@dataclass(frozen=True)
class RetrievedMessage:
    uidl: str
    raw: bytes  # the message as the server holds it, CRLF line ends; headers only if truncated
    size: int  # LIST size, of the whole message even when truncated
    truncated: bool  # over max_size: raw is TOP n 0, the header block and the blank line


class Pop3Maildrop:
    """A logged-in (TRANSACTION state) poplib client, read by UIDL."""

    def __init__(self, client: poplib.POP3) -> None:
        self.client = client
        self._server = _server_of(client)

    def messages(self) -> list[Pop3Message]:
        """Every message in the maildrop, in session order: UIDL and LIST, two round trips."""
        with self._errors():
            uidls = self._uidls()
            _response, lines, _octets = self.client.list()
        sizes = {number: int(size) for number, size in _pairs(lines)}
        return [
            Pop3Message(number, uidl, sizes[number])
            for number, uidl in sorted(uidls.items())
            if number in sizes
        ]

    def retrieve(self, message: Pop3Message, *, max_size: int) -> RetrievedMessage:
        """RETR, or TOP n 0 when over max_size.

        Raises MessageUnreadable when the server will not hand this message over; the session
        can go on to the next one. A broken connection raises ProtocolError instead.
        """
        truncated = message.size > max_size
        with self._errors():
            lines = self._read(message, headers_only=truncated)
        return RetrievedMessage(message.uidl, _join(lines), message.size, truncated)

    def delete(self, messages: Iterable[Pop3Message]) -> None:
        """DELE each: only marked, the server removes them when quit() ends the session."""
        with self._errors():
            for message in messages:
                self.client.dele(message.number)

    def quit(self) -> None:
        """QUIT, which commits the deletions (RFC 1939 §6 UPDATE state) and hangs up."""
        with self._errors():
            try:
                self.client.quit()
            except BaseException as exc:
                self.client.close()
                if not (isinstance(exc, poplib.error_proto) and _from_server(exc)):
                    raise
                raise ProtocolError(
                    f"{self._server.host} did not confirm QUIT, so messages marked for "
                    f"deletion may still be there (server said: {_said(exc)})."
                ) from exc

    # -- internals ---------------------------------------------------------------------------

    def _uidls(self) -> dict[int, str]:
        try:
            _response, lines, _octets = self.client.uidl()
        except poplib.error_proto as exc:
            if not _from_server(exc):
                raise
            # UIDL is optional in RFC 1939 §7; without it every poll would look all new.
            raise ProtocolError(
                f"{self._server.host} does not support UIDL (server said: {_said(exc)}), "
                "which Postroom needs to tell new messages from ones already imported.",
                permanent=True,
            ) from exc
        return dict(_pairs(lines))

    def _read(self, message: Pop3Message, *, headers_only: bool) -> list[bytes]:
        try:
            if headers_only:
                _response, lines, _octets = self.client.top(message.number, 0)
            else:
                _response, lines, _octets = self.client.retr(message.number)
        except poplib.error_proto as exc:
            reason = self._why_unreadable(exc)
            if reason is None:
                raise  # poplib's "-ERR EOF": the connection is gone (mapped by _errors)
            raise MessageUnreadable(
                f"Message {message.uidl} (number {message.number}) could not be read: "
                f"{reason.rstrip('.')}.",
                uidl=message.uidl,
                reason=reason,
            ) from exc
        return lines

    def _why_unreadable(self, exc: poplib.error_proto) -> str | None:
        """Why this message alone failed, with the session back in step; None if it did not."""
        if _from_server(exc):
            # "-ERR": the server refused this message only (say, expunged by another client).
            return f"the server said: {_said(exc)}"
        if exc.args and exc.args[0] == "line too long":
            # poplib gave up mid-reply; skip to its end so the next command reads its own.
            self._skip_rest_of_reply()
            return f"it has a line longer than {poplib._MAXLINE:,} bytes"
        return None

    def _skip_rest_of_reply(self) -> None:
        """Read up to the "." line that ends a multi-line reply (RFC 1939 §3)."""
        at_line_start = False  # poplib stopped in the middle of the long line
        while True:
            chunk = self.client.file.readline(_SKIP_CHUNK)
            if not chunk:
                raise poplib.error_proto("-ERR EOF")
            if at_line_start and chunk in (b".\r\n", b".\n"):
                return
            at_line_start = chunk.endswith(b"\n")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """poplib/socket errors as ProviderErrors; mid-session TLS errors are a broken link."""
        where = f"{self._server.host} port {self._server.port}"
        with mapped_errors(self._server, Credentials("")):
            try:
                yield
            except ssl.SSLError as exc:
                reason = exc.reason or exc.strerror or str(exc)
                raise ProtocolError(f"The POP3 connection to {where} broke ({reason}).") from exc
            except poplib.error_proto as exc:
                if _from_server(exc):
                    raise
                # poplib's own complaint: "-ERR EOF" is a connection closed mid-reply.
                said = "closed mid-reply" if exc.args == ("-ERR EOF",) else _said(exc)
                raise ProtocolError(f"The POP3 connection to {where} broke ({said}).") from exc


def _join(lines: list[bytes]) -> bytes:
    """The message from poplib's lines.

    poplib's RETR/TOP strip each line's CRLF and undo dot-stuffing. RFC 1939 §3 has the server
    send CRLF line ends (Dovecot turns stored bare LFs into CRLF, as it does over IMAP), so
    joining with CRLF and ending with one gives back exactly what the server holds; a message
    stored without a final line end gains one, as the server adds it before the ".".
    """
    return CRLF.join(lines) + CRLF if lines else b""


def _pairs(lines: list[bytes]) -> Iterator[tuple[int, str]]:
    # "1 000000016b042564" (UIDL) or "1 2048" (LIST); RFC 1939 §7 keeps UIDLs to 0x21..0x7E.
    for line in lines:
        number, value = line.split(None, 1)
        yield int(number), value.strip().decode("ascii", "replace")


def _from_server(exc: poplib.error_proto) -> bool:
    # The server's replies reach error_proto as bytes; poplib's own complaints as str.
    return bool(exc.args) and isinstance(exc.args[0], bytes)


def _said(exc: poplib.error_proto) -> str:
    return server_said(exc.args[0] if exc.args else "")


def _server_of(client: poplib.POP3) -> ServerAddress:
    """Where the client is connected, for error messages."""
    server = getattr(client, "server", None)
    if isinstance(server, ServerAddress):
        return server
    security = "ssl" if isinstance(client, poplib.POP3_SSL) else "none"
    return ServerAddress(client.host, client.port, security, timeout=client.timeout or 0.0)
