"""Reading one IMAP folder by UID, in batches, and acting on messages once they are stored.

The poller's side of RFC 3501: a UID is stable while UIDVALIDITY is, so the checkpoint is
"(UIDVALIDITY, highest UID stored)", and everything above it is new. Bodies are fetched with
BODY.PEEK[] so reading never sets \\Seen; marking, moving and deleting are separate calls the
caller makes only after it committed what it read.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from imapclient import DELETED, SEEN, IMAPClient

from providers.config import Credentials, ServerAddress
from providers.errors import FetchRefused, FolderMissing, ProtocolError, server_said
from providers.imap import mapped_errors, select_folder

# UIDs per command for the cheap items (sizes, flags, header fields): ~6 kB of UIDs keeps
# the command line under the 8 kB RFC 7162 §4 advises clients to stay within.
CHUNK = 500
DEFAULT_BATCH_BYTES = 4 * 2**20
DEFAULT_BATCH_COUNT = 200

_BODY = b"BODY[]"
_HEADER = b"BODY[HEADER]"
_SIZE = b"RFC822.SIZE"
_DATE = b"INTERNALDATE"
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None  # the server's UIDNEXT, else highest UID + 1; None: empty and unsaid
    exists: int


@dataclass(frozen=True)
class FetchedMessage:
    uid: int
    raw: bytes  # exactly as the server sent it; only the header block when truncated
    size: int  # RFC822.SIZE as the server reported it
    internaldate: datetime | None  # aware, UTC
    truncated: bool  # over max_size: raw is BODY.PEEK[HEADER] (header block + blank line)


class ImapFolder:
    """A selected folder on a logged-in IMAPClient.

    readonly=True EXAMINEs the folder (RFC 3501 §6.3.2): nothing can change it, not even
    \\Recent. The after-import actions need readonly=False.
    """

    def __init__(self, client: IMAPClient, folder: str, *, readonly: bool) -> None:
        self.client = client
        self.folder = folder
        self.readonly = readonly
        self._server = _server_of(client)
        self._sizes: dict[int, int] = {}  # what sizes() learnt, so fetch() need not ask
        with self._errors():
            response = select_folder(client, folder, readonly=readonly)
            self.state = self._state(response)

    # -- reading -----------------------------------------------------------------------------

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs above the checkpoint, ascending.

        RFC 3501 §6.4.8: "a UID range of 559:* always includes the UID of the last message in
        the mailbox, even if 559 is higher than any assigned UID value", so with nothing new
        the server still answers with the last message: drop what is not above last_uid.
        """
        with self._errors():
            found = self.client.search(["UID", f"{last_uid + 1}:*"])
        return sorted(uid for uid in found if uid > last_uid)

    def all_uids(self) -> list[int]:
        with self._errors():
            return sorted(self.client.search("ALL"))

    def uids_since(self, day: date, *, through_uid: int) -> list[int]:
        """UIDs up to `through_uid` whose INTERNALDATE is on or after `day` (RFC 3501 6.4.4
        SINCE: the server compares dates, disregarding time and timezone)."""
        with self._errors():
            found = self.client.search(["SINCE", day, "UID", f"1:{through_uid}"])
        return sorted(uid for uid in found if uid <= through_uid)

    def sizes(self, uids: Sequence[int]) -> dict[int, tuple[int, datetime | None]]:
        """RFC822.SIZE and INTERNALDATE by UID; UIDs expunged meanwhile are absent."""
        result: dict[int, tuple[int, datetime | None]] = {}
        with self._errors(), _exact_times(self.client):
            for chunk in _chunks(uids, CHUNK):
                for uid, data in self._fetch_items(chunk, [_SIZE, _DATE]).items():
                    if data.get(_SIZE) is not None:  # None: expunged meanwhile
                        result[uid] = (int(data[_SIZE]), _utc(data.get(_DATE)))
        self._sizes.update((uid, size) for uid, (size, _date) in result.items())
        return result

    def batches(
        self,
        uids: Sequence[int],
        sizes: Mapping[int, tuple[int, Any]] | Mapping[int, int],
        *,
        max_bytes: int = DEFAULT_BATCH_BYTES,
        max_count: int = DEFAULT_BATCH_COUNT,
    ) -> Iterator[list[int]]:
        """Consecutive runs of uids to fetch together (see batch_uids)."""
        return batch_uids(uids, sizes, max_bytes=max_bytes, max_count=max_count)

    def fetch(self, uids: Sequence[int], *, max_size: int) -> list[FetchedMessage]:
        """The messages, in the order of uids; those expunged meanwhile are left out.

        Two round trips at most: full bodies, then the header blocks of the oversize ones.
        """
        with self._errors(), _exact_times(self.client):
            sizes = self._known_sizes(uids)
            full = [uid for uid in uids if uid in sizes and sizes[uid] <= max_size]
            over = [uid for uid in uids if uid in sizes and sizes[uid] > max_size]
            found = {
                **self._fetch_messages(full, b"BODY.PEEK[]", _BODY),
                **self._fetch_messages(over, b"BODY.PEEK[HEADER]", _HEADER),
            }
            self._check_gone(list(uids), [uid for uid in uids if uid not in found])
        for uid in uids:
            self._sizes.pop(uid, None)
        return [found[uid] for uid in uids if uid in found]

    def _check_gone(self, asked: list[int], missing: list[int]) -> None:
        """What a FETCH left out must really be expunged: a message still in the folder that
        came back without its content is refused (all of `asked`, so the caller finds it one
        at a time), never skipped past by the cursor."""
        if not missing:
            return
        self.client.noop()  # take in the EXPUNGEs another session caused, so SEARCH agrees
        if self.client.search(["UID", _uid_set(missing)]):
            raise self._refused(asked, "no content came back though it is still in the folder")

    def headers(self, uids: Sequence[int], fields: Sequence[str]) -> dict[int, bytes]:
        """Chosen header fields by UID (header lines plus the blank line), without \\Seen."""
        names = " ".join(_field_name(field) for field in fields)
        result: dict[int, bytes] = {}
        with self._errors():
            for chunk in _chunks(uids, CHUNK):
                fetched = self._fetch_items(chunk, [f"BODY.PEEK[HEADER.FIELDS ({names})]"])
                result.update((uid, _header_fields(data)) for uid, data in fetched.items())
        return {uid: value for uid, value in result.items() if value is not None}

    # -- after import ------------------------------------------------------------------------

    def mark_seen(self, uids: Sequence[int]) -> None:
        self._require_writable("mark messages as read")
        with self._errors():
            for chunk in _chunks(uids, CHUNK):
                self.client.add_flags(chunk, [SEEN], silent=True)

    def move(
        self,
        uids: Sequence[int],
        folder: str,
        *,
        copied: Callable[[list[int]], None] | None = None,
    ) -> None:
        """RFC 6851 MOVE where offered; else COPY, \\Deleted and an expunge of just these.

        COPY then delete is not atomic: `copied` hears of each chunk copied before its delete,
        so a caller can remember it and, should the connection break between the two, only
        delete on the next attempt (instead of copying again). MOVE exists for this reason.
        """
        self._require_writable("move messages")
        with self._errors():
            for chunk in _chunks(uids, CHUNK):
                if self.client.has_capability("MOVE"):
                    self._into(folder, self.client.move, chunk)
                    continue
                self._into(folder, self.client.copy, chunk)
                if copied is not None:
                    copied(chunk)
                self._delete(chunk)

    def delete(self, uids: Sequence[int]) -> None:
        self._require_writable("delete messages")
        with self._errors():
            for chunk in _chunks(uids, CHUNK):
                self._delete(chunk)

    # -- internals ---------------------------------------------------------------------------

    def _state(self, response: Mapping[bytes, Any]) -> FolderState:
        if b"UIDVALIDITY" not in response:
            # Without it UIDs could be reused unnoticed and messages skipped for good.
            raise ProtocolError(
                f"{self._server.host} did not report a UIDVALIDITY for '{self.folder}', so "
                "new messages cannot be told from old ones: this server cannot be polled over "
                "IMAP; try POP3.",
                permanent=True,
            )
        exists = int(response.get(b"EXISTS", 0))
        uidnext = response.get(b"UIDNEXT")
        if uidnext is None and exists:
            uidnext = max(self.client.search(["UID", "*"]), default=0) + 1
        return FolderState(int(response[b"UIDVALIDITY"]), _int_or_none(uidnext), exists)

    def _known_sizes(self, uids: Sequence[int]) -> dict[int, int]:
        unknown = [uid for uid in uids if uid not in self._sizes]
        for chunk in _chunks(unknown, CHUNK):
            for uid, data in self._fetch_items(chunk, [_SIZE]).items():
                if data.get(_SIZE) is not None:
                    self._sizes[uid] = int(data[_SIZE])
        return {uid: self._sizes[uid] for uid in uids if uid in self._sizes}

    def _fetch_messages(
        self, uids: list[int], item: bytes, key: bytes
    ) -> dict[int, FetchedMessage]:
        fetched = self._fetch_items(uids, [item, _SIZE, _DATE])
        return {
            uid: FetchedMessage(
                uid=uid,
                raw=data[key],
                size=int(data[_SIZE]),
                internaldate=_utc(data.get(_DATE)),
                truncated=key == _HEADER,
            )
            for uid, data in fetched.items()
            # Dovecot answers an expunged UID with "BODY[] NIL" and OK [EXPUNGEISSUED].
            if data.get(key) is not None and data.get(_SIZE) is not None
        }

    def _fetch_items(self, uids: list[int], items: list[Any]) -> dict[int, dict[bytes, Any]]:
        """UID FETCH; a NO because some UIDs were expunged meanwhile is retried without them.

        RFC 2180 §4.1 lets a server refuse a FETCH that names an expunged message; which ones
        still exist takes one UID SEARCH to learn. A NO for messages that all exist, or a BYE
        (Dovecot hangs up on a message it cannot read), is FetchRefused: the caller asks for
        them one at a time to find the one the server cannot hand over.
        """
        if not uids:
            return {}
        try:
            return self.client.fetch(uids, items)
        except imaplib.IMAP4.abort as exc:
            bye = self._bye()
            if bye is None:
                raise  # the connection broke: not the messages' fault
            raise self._refused(uids, _said(bye), connection_lost=True) from exc
        except imaplib.IMAP4.error as exc:
            alive = sorted(set(self.client.search(["UID", _uid_set(uids)])))
            if len(alive) == len(set(uids)):
                raise self._refused(uids, _said(str(exc).split(" failed: ", 1)[-1])) from exc
            return self._fetch_items(alive, items)

    def _bye(self) -> str | None:
        """The server's BYE text, when it hung up on purpose (imaplib keeps it)."""
        said = self.client._imap.untagged_responses.get("BYE")
        return said[-1].decode("utf-8", "replace") if said else None

    def _refused(self, uids: list[int], reason: str, *, connection_lost: bool = False):
        which = f"message UID {uids[0]}" if len(uids) == 1 else f"{len(uids)} messages"
        return FetchRefused(
            f"{self._server.host} would not hand over {which} in '{self.folder}' ({reason}).",
            uids=tuple(uids),
            reason=reason,
            connection_lost=connection_lost,
        )

    def _into(
        self, folder: str, command: Callable[[list[int], str], object], uids: list[int]
    ) -> None:
        try:
            command(uids, folder)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            # RFC 3501 §6.4.7: a missing target is "NO [TRYCREATE]"; not all servers say so.
            if "TRYCREATE" in str(exc) or not self.client.folder_exists(folder):
                raise FolderMissing(
                    f"Folder '{folder}' does not exist on the server (server said: "
                    f"{_reply(exc)}): create it or change the folder imported mail moves to."
                ) from exc
            raise

    def _delete(self, uids: list[int]) -> None:
        self.client.add_flags(uids, [DELETED], silent=True)
        if self.client.has_capability("UIDPLUS"):
            # RFC 4315 §2.1: UID EXPUNGE removes only these UIDs.
            self.client.uid_expunge(uids)
        else:
            # Plain EXPUNGE removes every \Deleted message in the folder, including those
            # another client (a person in webmail) flagged and may still undelete: only a
            # last resort on servers without UIDPLUS.
            self.client.expunge()

    def _require_writable(self, what: str) -> None:
        if self.readonly:
            raise ValueError(f"cannot {what}: '{self.folder}' was opened read-only")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """imaplib/socket errors as ProviderErrors; a TLS error mid-session is a broken link.

        providers.imap.mapped_errors reads ssl errors as a handshake gone wrong (permanent,
        "check the security setting"); after login they mean the connection broke.
        """
        with mapped_errors(self._server, Credentials("")):
            try:
                yield
            except ssl.SSLError as exc:
                where = f"{self._server.host} port {self._server.port}"
                reason = exc.reason or exc.strerror or str(exc)
                raise ProtocolError(f"The IMAP connection to {where} broke ({reason}).") from exc


def _said(reply: str) -> str:
    return f"server said: {server_said(reply).rstrip('.')}"


def batch_uids(
    uids: Iterable[int],
    sizes: Mapping[int, tuple[int, Any]] | Mapping[int, int],
    *,
    max_bytes: int = DEFAULT_BATCH_BYTES,
    max_count: int = DEFAULT_BATCH_COUNT,
) -> Iterator[list[int]]:
    """Runs of uids, in the order given, each at most max_bytes and max_count long.

    A message bigger than max_bytes is a batch of its own. UIDs missing from sizes were
    expunged before their size was asked: there is nothing to fetch, so they are left out.
    """
    batch: list[int] = []
    total = 0
    for uid in uids:
        if uid not in sizes:
            continue
        size = _size_of(sizes[uid])
        if batch and (total + size > max_bytes or len(batch) >= max_count):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch


@contextlib.contextmanager
def _exact_times(client: IMAPClient) -> Iterator[None]:
    # imapclient's default turns INTERNALDATE into naive local time with today's UTC offset,
    # which is an hour off across a DST change; ask for the zone the server sent instead.
    before = client.normalise_times
    client.normalise_times = False
    try:
        yield
    finally:
        client.normalise_times = before


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        # RFC 3501 INTERNALDATE always carries a zone; a server that leaves it out most
        # likely means UTC.
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _header_fields(data: Mapping[bytes, Any]) -> bytes | None:
    # The server echoes the field list, spelt its own way: match on the prefix.
    for key, value in data.items():
        if isinstance(key, bytes) and key.upper().startswith(b"BODY[HEADER.FIELDS"):
            return value
    return None


def _field_name(field: str) -> str:
    if not _FIELD_NAME.fullmatch(field):
        raise ValueError(f"not a header field name: {field!r}")
    return field.upper()


def _size_of(value: tuple[int, Any] | int) -> int:
    return value[0] if isinstance(value, tuple) else value


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _uid_set(uids: Iterable[int]) -> str:
    return ",".join(str(uid) for uid in uids)


def _int_or_none(value: Any) -> int | None:
    return int(value) if value is not None else None


def _reply(exc: Exception) -> str:
    # imapclient words failures as "<command> failed: <server text>".
    return server_said(str(exc).split(" failed: ", 1)[-1])


def _server_of(client: IMAPClient) -> ServerAddress:
    """Where the client is connected, for error messages."""
    server = getattr(client, "server", None)
    if isinstance(server, ServerAddress):
        return server
    timeout = client.socket().gettimeout() or 0.0
    security = "ssl" if client.ssl else "none"
    return ServerAddress(client.host, client.port, security, timeout=timeout)
