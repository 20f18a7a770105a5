"""The Dovecot fixture, used the way a mail client would: over the wire, with real TLS."""

from __future__ import annotations

import poplib
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.servers.dovecot import Dovecot, MailUser

CRLF_MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Support <support@example.test>\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?= and a raw caf\xc3\xa9\r\n"
    b"X-Latin1: na\xefve\r\n"
    b"Message-ID: <crlf-1@example.test>\r\n"
    b"\r\n"
    b"Hello,\r\n"
    b".a line that POP3 must dot-stuff\r\n"
    b"\xff\xfe odd bytes that are not UTF-8\r\n"
    b"\r\n"
)
BARE_LF_MESSAGE = b"From: bob@example.test\nSubject: bare LF\n\nline one\nline two\n"
CR_ONLY_MESSAGE = b"From: carol@example.test\rSubject: CR only\r\rbody\r"


@contextmanager
def imap_starttls(dovecot: Dovecot) -> Iterator[IMAPClient]:
    client = IMAPClient(dovecot.host, port=dovecot.ports.imap, ssl=False, timeout=10)
    try:
        assert b"STARTTLS" in client.capabilities()
        client.starttls(dovecot.ssl_context())
        yield client
    finally:
        client.shutdown()


def pop3_stls(dovecot: Dovecot) -> poplib.POP3:
    client = poplib.POP3(dovecot.host, dovecot.ports.pop3, timeout=10)
    assert "STLS" in client.capa()
    client.stls(dovecot.ssl_context())
    return client


def pop3s(dovecot: Dovecot) -> poplib.POP3_SSL:
    return poplib.POP3_SSL(
        dovecot.host, dovecot.ports.pop3s, timeout=10, context=dovecot.ssl_context()
    )


def pop3_login(client: poplib.POP3, user: MailUser) -> None:
    client.user(user.name)
    client.pass_(user.password)


def retr(client: poplib.POP3, number: int) -> bytes:
    # poplib strips the CRLFs and undoes dot-stuffing; put the line ends back.
    _, lines, _ = client.retr(number)
    return b"".join(line + b"\r\n" for line in lines)


def test_it_logs_in_over_imap_with_starttls(dovecot: Dovecot, mail_user: MailUser) -> None:
    with imap_starttls(dovecot) as client:
        client.login(mail_user.name, mail_user.password)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0


def test_it_logs_in_over_imaps(dovecot: Dovecot, mail_user: MailUser) -> None:
    client = IMAPClient(
        dovecot.host, port=dovecot.ports.imaps, ssl_context=dovecot.ssl_context(), timeout=10
    )
    try:
        client.login(mail_user.name, mail_user.password)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        assert b"IDLE" in client.capabilities()
    finally:
        client.logout()


def test_it_logs_in_over_pop3_with_stls(dovecot: Dovecot, mail_user: MailUser) -> None:
    with closing(pop3_stls(dovecot)) as client:
        pop3_login(client, mail_user)
        assert client.stat() == (0, 0)
        client.quit()


def test_it_logs_in_over_pop3s(dovecot: Dovecot, mail_user: MailUser) -> None:
    with closing(pop3s(dovecot)) as client:
        pop3_login(client, mail_user)
        assert client.stat() == (0, 0)
        client.quit()


def test_it_refuses_a_wrong_password_on_imap(dovecot: Dovecot, mail_user: MailUser) -> None:
    with imap_starttls(dovecot) as client, pytest.raises(LoginError):
        client.login(mail_user.name, mail_user.password + "-wrong")


def test_it_refuses_a_wrong_password_on_pop3(dovecot: Dovecot, mail_user: MailUser) -> None:
    with closing(pop3s(dovecot)) as client:
        client.user(mail_user.name)
        with pytest.raises(poplib.error_proto, match="AUTH"):
            client.pass_(mail_user.password + "-wrong")


def test_it_accepts_the_address_as_login_name(dovecot: Dovecot) -> None:
    user = dovecot.add_user(name="Alice.Example", password="grüße aus köln")
    by_address = MailUser(user.address.upper(), user.password, user.maildir)

    dovecot.deliver(user, CRLF_MESSAGE)

    with dovecot.imap(by_address) as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 1
    assert user.maildir == dovecot.mail_root / "alice.example" / "Maildir"


def test_it_refuses_a_user_it_does_not_know(dovecot: Dovecot) -> None:
    stranger = MailUser("nobody-here", "whatever", dovecot.root / "nowhere")
    with pytest.raises(LoginError), dovecot.imap(stranger):
        pass


def test_it_answers_failed_logins_without_delay(dovecot: Dovecot, mail_user: MailUser) -> None:
    # Dovecot normally stalls failures and then every login from the same IP; tests can't wait.
    wrong = MailUser(mail_user.name, "wrong", mail_user.maildir)
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(LoginError), dovecot.imap(wrong):
            pass
    with dovecot.imap(mail_user):
        pass
    assert time.monotonic() - started < 1.5


def test_it_lets_users_added_while_running_log_in_at_once(dovecot: Dovecot) -> None:
    # No reload in between: Dovecot re-reads the passwd-file when it changes.
    first, second = dovecot.add_user(), dovecot.add_user(password="s3cret with spaces")
    for user in (first, second):
        with dovecot.imap(user) as client:
            assert client.select_folder("INBOX")[b"EXISTS"] == 0
    assert second.address == f"{second.name}@example.test"


def test_it_keeps_delivered_bytes_unchanged_on_disk(dovecot: Dovecot, mail_user: MailUser) -> None:
    for raw in (CRLF_MESSAGE, BARE_LF_MESSAGE, CR_ONLY_MESSAGE):
        path = dovecot.deliver(mail_user, raw)
        assert path.parent == mail_user.maildir / "new"
        assert path.read_bytes() == raw


def test_it_serves_a_delivered_message_byte_for_byte_over_imap(
    dovecot: Dovecot, mail_user: MailUser
) -> None:
    dovecot.deliver(mail_user, CRLF_MESSAGE)

    [uid] = dovecot.folder_uids(mail_user)
    assert dovecot.fetch_raw(mail_user, uid) == CRLF_MESSAGE


def test_it_serves_a_delivered_message_byte_for_byte_over_pop3(
    dovecot: Dovecot, mail_user: MailUser
) -> None:
    dovecot.deliver(mail_user, CRLF_MESSAGE)

    with closing(pop3_stls(dovecot)) as client:
        pop3_login(client, mail_user)
        assert client.stat() == (1, len(CRLF_MESSAGE))
        assert retr(client, 1) == CRLF_MESSAGE
        client.quit()


def test_it_serves_a_bare_lf_message_with_crlf_line_ends(
    dovecot: Dovecot, mail_user: MailUser
) -> None:
    # Documented Dovecot behaviour: the wire format is always CRLF, whatever is on disk.
    dovecot.deliver(mail_user, BARE_LF_MESSAGE)

    [uid] = dovecot.folder_uids(mail_user)
    assert dovecot.fetch_raw(mail_user, uid) == BARE_LF_MESSAGE.replace(b"\n", b"\r\n")


def test_it_round_trips_an_appended_message(dovecot: Dovecot, mail_user: MailUser) -> None:
    uid = dovecot.append(mail_user, CRLF_MESSAGE, flags=[r"\Seen"])

    assert uid is not None
    assert dovecot.folder_uids(mail_user) == [uid]
    assert dovecot.fetch_raw(mail_user, uid) == CRLF_MESSAGE
    with dovecot.imap(mail_user) as client:
        client.select_folder("INBOX", readonly=True)
        assert rb"\Seen" in client.get_flags([uid])[uid]


def test_it_shows_a_message_delivered_to_another_folder_in_that_folder(
    dovecot: Dovecot, mail_user: MailUser
) -> None:
    path = dovecot.deliver(mail_user, CRLF_MESSAGE, folder="Support/Tier 2", flags="S")

    assert path.parent == mail_user.maildir / ".Support.Tier 2" / "cur"
    assert path.name.endswith(":2,S")
    assert dovecot.folder_uids(mail_user) == []
    [uid] = dovecot.folder_uids(mail_user, "Support/Tier 2")
    assert dovecot.fetch_raw(mail_user, uid, "Support/Tier 2") == CRLF_MESSAGE
    with dovecot.imap(mail_user) as client:
        client.select_folder("Support/Tier 2", readonly=True)
        assert rb"\Seen" in client.get_flags([uid])[uid]


def test_it_appends_to_a_created_folder(dovecot: Dovecot, mail_user: MailUser) -> None:
    dovecot.create_folder(mail_user, "Archive")

    uid = dovecot.append(mail_user, CRLF_MESSAGE, folder="Archive")

    assert dovecot.folder_uids(mail_user, "Archive") == [uid]
    assert dovecot.folder_dir(mail_user, "Archive").is_dir()


def test_it_notifies_an_idling_client_of_a_delivery(dovecot: Dovecot, mail_user: MailUser) -> None:
    with dovecot.imap(mail_user) as client:
        client.select_folder("INBOX")
        client.idle()
        try:
            dovecot.deliver(mail_user, CRLF_MESSAGE)
            responses = client.idle_check(timeout=10)
        finally:
            client.idle_done()
    assert (1, b"EXISTS") in responses


def test_it_allows_many_connections_from_one_user(dovecot: Dovecot, mail_user: MailUser) -> None:
    # Dovecot's default mail_max_userip_connections is 10.
    clients = []
    try:
        for _ in range(15):
            client = IMAPClient(
                dovecot.host,
                port=dovecot.ports.imaps,
                ssl_context=dovecot.ssl_context(),
                timeout=10,
            )
            clients.append(client)
            client.login(mail_user.name, mail_user.password)
            client.select_folder("INBOX")
    finally:
        for client in clients:
            client.logout()


def test_it_keeps_users_mail_and_ports_across_a_restart(
    dovecot: Dovecot, mail_user: MailUser
) -> None:
    dovecot.deliver(mail_user, CRLF_MESSAGE)
    [uid] = dovecot.folder_uids(mail_user)
    ports = dovecot.ports

    with dovecot.imap(mail_user) as connected:
        connected.select_folder("INBOX")
        dovecot.restart()
        # The old session is gone (Dovecot said BYE); clients must reconnect.
        with pytest.raises((IMAPClient.AbortError, OSError)):
            connected.noop()

    assert dovecot.ports == ports
    assert dovecot.folder_uids(mail_user) == [uid]
    assert dovecot.fetch_raw(mail_user, uid) == CRLF_MESSAGE


def test_renumber_gives_the_folder_a_new_uidvalidity_and_keeps_the_mail(dovecot, mail_user):
    for n in range(2):
        dovecot.deliver(mail_user, f"Subject: {n}\r\n\r\nbody\r\n".encode())
    with dovecot.imap(mail_user) as client:
        before = client.select_folder("INBOX")[b"UIDVALIDITY"]
    new = dovecot.renumber(mail_user)
    with dovecot.imap(mail_user) as client:
        after = client.select_folder("INBOX")
    assert after[b"UIDVALIDITY"] == new != before
    assert after[b"EXISTS"] == 2
