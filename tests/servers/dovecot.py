"""A real Dovecot (IMAP, IMAPS, POP3, POP3S) on loopback for the tests, one per session.

It writes its own dovecot.conf, log and certificate into the pytest temp dir, and keeps
base_dir, state_dir, the passwd-files and the Maildirs in a private dir beside it (see
`_shared_dir`). Nothing under /etc/dovecot, /run/dovecot or /var/lib/dovecot is read or
written, and it only listens on free 127.0.0.1 ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient import IMAPClient, imap_utf7

from tests.servers.net import free_port, wait_for_port
from tests.servers.tls import make_self_signed

DOMAIN = "example.test"
# The IMAP hierarchy separator we configure; on disk Maildir++ still uses ".Parent.Child".
SEPARATOR = "/"
START_TIMEOUT = 10.0
STOP_GRACE = 1.5
# Modern Dovecot wants DH parameters for DHE ciphers; Debian ships a file, use it if present.
DH_PARAMS = Path("/usr/share/dovecot/dh.pem")
# Concurrency limits well above Dovecot's defaults (10 sessions per user and IP, 100 processes
# per service): a login process per TLS connection stays for the whole session.
MAX_USERIP_CONNECTIONS = 100
LOGIN_PROCESS_LIMIT = 256
SESSION_PROCESS_LIMIT = 512
# How often an IDLE session without inotify (see the config) looks for new mail itself.
IDLE_CHECK_INTERVAL = "1 secs"
# Unprivileged accounts that may own the mail when we run as root (Dovecot refuses uid 0).
MAIL_ACCOUNTS = ("nobody",)
# Run as root, Dovecot's helper processes use these (its defaults).
SERVICE_ACCOUNTS = ("dovecot", "dovenull")


class DovecotError(RuntimeError):
    """Dovecot did not start or stop; the message carries the tail of its log."""


@dataclass(frozen=True)
class Ports:
    imap: int
    imaps: int
    pop3: int
    pop3s: int

    @classmethod
    def pick(cls) -> Ports:
        # free_port() releases the port at once, so make sure the four are at least distinct.
        ports: list[int] = []
        while len(ports) < 4:
            port = free_port()
            if port not in ports:
                ports.append(port)
        return cls(*ports)


@dataclass(frozen=True)
class MailUser:
    name: str
    password: str
    maildir: Path

    @property
    def address(self) -> str:
        return f"{self.name}@{DOMAIN}"


@dataclass(frozen=True)
class Accounts:
    """The unix users Dovecot's processes run as, and the one that owns the mail files."""

    internal_user: str
    internal_group: str
    login_user: str
    mail_uid: int
    mail_gid: int
    rootless: bool

    @classmethod
    def detect(cls) -> Accounts:
        if os.geteuid() != 0:
            # Rootless Dovecot: every process and all mail run as whoever runs the tests.
            me = pwd.getpwuid(os.geteuid())
            group = grp.getgrgid(os.getegid()).gr_name
            return cls(me.pw_name, group, me.pw_name, me.pw_uid, os.getegid(), rootless=True)
        for name in SERVICE_ACCOUNTS:
            _require_account(name, "Debian's dovecot-core package creates it")
        mail = next((a for a in map(_account, MAIL_ACCOUNTS) if a is not None), None)
        if mail is None:
            raise DovecotError(
                f"running as root but none of {MAIL_ACCOUNTS} exists; Dovecot refuses uid 0 "
                "for mail, so the test mail needs an unprivileged owner (create one with useradd)"
            )
        return cls("dovecot", "dovecot", "dovenull", mail.pw_uid, mail.pw_gid, rootless=False)


class Dovecot:
    """A Dovecot master process: config and log under `root`, what it serves in `shared_dir`."""

    host = "127.0.0.1"
    separator = SEPARATOR

    def __init__(
        self,
        root: Path,
        ports: Ports | None = None,
        extra_config: str = "",
        password_mechanisms: str = "",
    ) -> None:
        self.root = root
        self.ports = ports or Ports.pick()
        # Appended to the generated dovecot.conf: a variant server (say, one without IDLE).
        self.extra_config = extra_config
        # Limits the passwd-file passdb to these SASL mechanisms ("plain login"), so a variant
        # can give others (xoauth2) to a passdb of its own; empty: every mechanism.
        self.password_mechanisms = password_mechanisms
        self.accounts = Accounts.detect()
        self.config_path = root / "dovecot.conf"
        self.log_path = root / "dovecot.log"
        self.shared_dir = _shared_dir()
        self.users_dir = self.shared_dir / "users"
        self.mail_root = self.shared_dir / "mail"
        self.state_dir = self.shared_dir / "state"
        self.base_dir = self.shared_dir / "run"
        self.instance_name = f"postroom-test-{os.getpid()}-{root.name}"
        cert = make_self_signed(root / "tls")
        self.cert_path = cert.cert_path
        self.key_path = cert.key_path
        self._users: dict[str, MailUser] = {}
        self._counter = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None
        self._prepare_tree()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self.config_path.write_text(self._config())
        with self.log_path.open("ab") as log:
            # Config errors go to stderr before log_path is opened, so both end up in one file.
            self._process = subprocess.Popen(
                [_dovecot_binary(), "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._wait_until_listening()

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, so IMAP clients get "* BYE Server shutting down"; SIGKILL after `grace`.

        Dovecot's graceful shutdown always sleeps about a second, and several more if a child is
        still starting up, so the grace is capped rather than waited out.
        """
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        # Children outlive the master for a moment (the log process drains); one that still held
        # a listening socket would make the next start fail to bind.
        _end_group(process.pid)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.shared_dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file)"
        return "\n".join(text.splitlines()[-lines:])

    # -- users and mail on disk --------------------------------------------------------------

    def add_user(self, name: str | None = None, password: str | None = None) -> MailUser:
        name = name or f"user{next(self._counter):04d}"
        password = password or f"pw-{os.urandom(6).hex()}"
        _check_name(name)
        _check_password(password)
        # Dovecot lower-cases login names (auth_username_format), so files go by the lower case.
        key = name.lower()
        if key in self._users:
            raise ValueError(f"user {name!r} already exists")
        home = self.mail_root / key
        user = MailUser(name=name, password=password, maildir=home / "Maildir")
        self._make_dirs(home)
        self._make_maildir(user.maildir)
        self._write_passwd_file(key, password)
        self._users[key] = user
        return user

    def deliver(self, user: MailUser, raw: bytes, folder: str = "INBOX", flags: str = "") -> Path:
        """Drop `raw` into the Maildir exactly as given, the way an MDA would (tmp/ then new/).

        With flags (Maildir letters such as "S" or "FS") the file goes to cur/ with ":2,<flags>".
        Dovecot moves files from new/ to cur/ when it next looks, so the path may go stale.
        """
        box = self.folder_dir(user, folder)
        self._make_maildir(box)
        name = _unique_file_name()
        tmp = box / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            self._chown_fd(fd)
        finally:
            os.close(fd)
        if flags:
            target = box / "cur" / f"{name}:2,{''.join(sorted(set(flags)))}"
        else:
            target = box / "new" / name
        os.rename(tmp, target)
        return target

    def renumber(self, user: MailUser, folder: str = "INBOX") -> int:
        """Make Dovecot forget the folder's UIDs, as a server restored from backup does: a new
        UIDVALIDITY, and every message a new UID (RFC 3501 2.3.1.1). Returns the new value."""
        box = self.folder_dir(user, folder)
        uidlist = box / "dovecot-uidlist"
        new = int(uidlist.read_text().split()[1][1:]) + 1
        for index in [*box.glob("dovecot.index*"), *user.maildir.glob("dovecot.list.index*")]:
            index.unlink()
        fd = os.open(uidlist, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, f"3 V{new} N1\n".encode())
        finally:
            os.close(fd)
        return new

    def folder_dir(self, user: MailUser, folder: str) -> Path:
        """The Maildir++ directory of an IMAP folder name: INBOX is the Maildir itself."""
        if folder.upper() == "INBOX":
            return user.maildir
        parts = [imap_utf7.encode(part).decode("ascii") for part in folder.split(SEPARATOR)]
        return user.maildir / ("." + ".".join(parts))

    # -- over the wire -----------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts our self-signed certificate (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.cert_path))

    @contextlib.contextmanager
    def imap(self, user: MailUser) -> Iterator[IMAPClient]:
        """A logged-in IMAPS connection for assertions."""
        client = IMAPClient(
            self.host, port=self.ports.imaps, ssl=True, ssl_context=self.ssl_context(), timeout=10
        )
        try:
            # AUTHENTICATE PLAIN sends UTF-8; imaplib's LOGIN can't send a non-ASCII password.
            client.plain_login(user.name, user.password)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(
        self, user: MailUser, raw: bytes, folder: str = "INBOX", flags: Sequence[str] = ()
    ) -> int | None:
        """APPEND over IMAP; the new UID from APPENDUID, or None if the server did not say.

        Not byte-exact: imaplib turns bare CR/LF into CRLF before sending.
        """
        with self.imap(user) as client:
            response = client.append(folder, raw, flags=tuple(flags))
        match = re.search(rb"\[APPENDUID \d+ (\d+)\]", response)
        return int(match.group(1)) if match else None

    def create_folder(self, user: MailUser, name: str) -> None:
        with self.imap(user) as client:
            client.create_folder(name)

    def folder_uids(self, user: MailUser, folder: str = "INBOX") -> list[int]:
        with self.imap(user) as client:
            client.select_folder(folder, readonly=True)
            return sorted(client.search("ALL"))

    def fetch_raw(self, user: MailUser, uid: int, folder: str = "INBOX") -> bytes:
        with self.imap(user) as client:
            client.select_folder(folder, readonly=True)
            response = client.fetch([uid], ["BODY.PEEK[]"])
        if uid not in response:
            raise KeyError(f"no UID {uid} in {folder!r} of {user.name}")
        return response[uid][b"BODY[]"]

    # -- internals ---------------------------------------------------------------------------

    def _prepare_tree(self) -> None:
        for directory in (self.mail_root, self.state_dir, self.users_dir):
            directory.mkdir()
            directory.chmod(0o711)
        # The master insists on a world-readable base_dir (and warns while fixing it).
        self.base_dir.mkdir()
        self.base_dir.chmod(0o755)
        self.log_path.touch()
        # So the mail can be found from the temp dir while debugging.
        (self.root / "mail").symlink_to(self.mail_root, target_is_directory=True)

    def _write_passwd_file(self, key: str, password: str) -> None:
        # One passwd-file per user (the passdb path is users/%u). A single shared file would not
        # do: Dovecot stats it at most once a second, so a user added within a second of another
        # login is "unknown" until the next second. A new path is read on first lookup.
        path = self.users_dir / key
        tmp = path.with_name(f".{key}.tmp")
        tmp.write_text(f"{key}:{{PLAIN}}{password}:::::\n", encoding="utf-8")
        # Test passwords only; the auth process runs unprivileged and must read the file.
        tmp.chmod(0o644)
        os.replace(tmp, path)

    def _make_maildir(self, maildir: Path) -> None:
        self._make_dirs(maildir)
        for sub in ("cur", "new", "tmp"):
            self._make_dirs(maildir / sub)

    def _make_dirs(self, directory: Path) -> None:
        if directory.is_dir():
            return
        directory.mkdir(mode=0o700)
        if not self.accounts.rootless:
            os.chown(directory, self.accounts.mail_uid, self.accounts.mail_gid)

    def _chown_fd(self, fd: int) -> None:
        if not self.accounts.rootless:
            os.fchown(fd, self.accounts.mail_uid, self.accounts.mail_gid)

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for port in (self.ports.imap, self.ports.imaps, self.ports.pop3, self.ports.pop3s):
            while True:
                if self._process is None or self._process.poll() is not None:
                    self._fail("Dovecot exited during start")
                try:
                    wait_for_port(port, self.host, timeout=0.2)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        self._fail(f"Dovecot is not listening on {self.host}:{port}")

    def _fail(self, what: str) -> None:
        self.stop()
        raise DovecotError(f"{what}; tail of {self.log_path}:\n{self.log_tail()}")

    def _config(self) -> str:
        return _render_config(self) + self.extra_config


def _render_config(d: Dovecot) -> str:
    a = d.accounts
    # Rootless: chroot needs root, so the services that chroot by default must not.
    chroot = "  chroot =\n" if a.rootless else ""
    dh = f"ssl_dh = <{DH_PARAMS}\n" if DH_PARAMS.exists() else ""
    mechanisms = f"  mechanisms = {d.password_mechanisms}\n" if d.password_mechanisms else ""
    return f"""\
# Written by tests/servers/dovecot.py: a throwaway instance, nothing from /etc/dovecot.
instance_name = {d.instance_name}
base_dir = {d.base_dir}
state_dir = {d.state_dir}
log_path = {d.log_path}
auth_verbose = yes
# Sub-second stamps: tests do many things within one second.
log_timestamp = "%H:%M:%S.%{{usecs}} "
protocols = imap pop3
listen = {d.host}
shutdown_clients = yes

default_internal_user = {a.internal_user}
default_internal_group = {a.internal_group}
default_login_user = {a.login_user}
mail_uid = {a.mail_uid}
mail_gid = {a.mail_gid}
first_valid_uid = 1
first_valid_gid = 1

ssl = yes
ssl_cert = <{d.cert_path}
ssl_key = <{d.key_path}
{dh}
disable_plaintext_auth = no
auth_mechanisms = plain login
# Log in as "name" or as the address "name@example.test", in any case.
auth_username_format = %Ln

# Dovecot 2.3 answers a failed login 2 s late and, through anvil, delays every later login from
# the same IP (all tests are 127.0.0.1) by 2-15 s. auth_failure_delay = 0 doesn't exist yet and
# login_trusted_networks no longer waives the penalty; a failure carrying "nodelay" skips both.
# Fields of a failed passdb are rolled back, so a first passdb that never decides (noauthenticate)
# sets it; the passwd-file passdb still checks the password.
passdb {{
  driver = static
  args = noauthenticate=y nodelay=y
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d.users_dir}/%u
{mechanisms}}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d.users_dir}/%u
  default_fields = home={d.mail_root}/%u
}}

mail_location = maildir:~/Maildir
# Tests don't survive power cuts; skip the fsyncs.
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = {SEPARATOR}
}}

# Many tests (and pollers under test) connect at once from one IP as the same user.
mail_max_userip_connections = {MAX_USERIP_CONNECTIONS}
# IDLE hears of new mail through inotify, one instance per session, and the kernel allows a
# uid 128 of them (fs.inotify.max_user_instances): all test mail runs as one uid, so past that
# Dovecot checks the folder every mailbox_idle_check_interval instead (default 30 s).
mailbox_idle_check_interval = {IDLE_CHECK_INTERVAL}
pop3_uidl_format = %08Xu%08Xv

service imap-login {{
  inet_listener imap {{
    port = {d.ports.imap}
  }}
  inet_listener imaps {{
    port = {d.ports.imaps}
    ssl = yes
  }}
  process_limit = {LOGIN_PROCESS_LIMIT}
  client_limit = 1000
{chroot}}}
service pop3-login {{
  inet_listener pop3 {{
    port = {d.ports.pop3}
  }}
  inet_listener pop3s {{
    port = {d.ports.pop3s}
    ssl = yes
  }}
  process_limit = {LOGIN_PROCESS_LIMIT}
  client_limit = 1000
{chroot}}}
service imap {{
  process_limit = {SESSION_PROCESS_LIMIT}
}}
service pop3 {{
  process_limit = {SESSION_PROCESS_LIMIT}
}}
service anvil {{
{chroot}}}
"""


def _dovecot_binary() -> str:
    binary = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/sbin")
    if binary is None:
        raise DovecotError("dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)")
    return binary


def _shared_dir() -> Path:
    """A private dir for what Dovecot's unprivileged processes open by absolute path.

    Not the pytest temp dir: that sits in /tmp/pytest-of-<user>, which is mode 0700 so the
    auth ("dovecot") and mail ("nobody") processes can't reach into it, and every pytest run
    resets it to 0700, so loosening it breaks a concurrent session. A short path also keeps
    the unix sockets in base_dir under the 108-byte sun_path limit.
    """
    shared = Path(tempfile.mkdtemp(prefix="postroom-dovecot-"))
    shared.chmod(0o711)
    blocked = [d for d in shared.parents if not d.stat().st_mode & stat.S_IXOTH]
    if blocked and os.geteuid() == 0:
        shutil.rmtree(shared)
        raise DovecotError(
            f"{blocked[0]} is not searchable by other users, so Dovecot's unprivileged processes "
            "can't reach their files; point TMPDIR at a directory they can enter (like /tmp)"
        )
    return shared


def _check_name(name: str) -> None:
    # It becomes a file name and a %u expansion, so keep it plain.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"user name {name!r}: use letters, digits, '.', '_' and '-'")


def _check_password(password: str) -> None:
    if not password or any(c in password for c in ":\n\r\0"):
        raise ValueError(f"password {password!r} can't go into a passwd-file")


_delivery_counter = itertools.count()


def _unique_file_name() -> str:
    # Maildir: time, then something unique on this host, then the host name.
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return (
        f"{int(now)}.M{int(now * 1e6) % 1_000_000}P{os.getpid()}Q{next(_delivery_counter)}.{host}"
    )


def _die_with_parent() -> None:
    # If pytest is killed outright, take Dovecot down too instead of leaving it listening.
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _signal_group(pgid: int, signo: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signo)


def _end_group(pgid: int) -> None:
    for signo in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(pgid):
            return
        _signal_group(pgid, signo)
        deadline = time.monotonic() + 0.5
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.01)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs; zombies don't count (they hold no sockets,
    and init may take a second to reap the orphans)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if entry.name.isdigit() and _live_member(entry / "stat", pgid):
            return True
    return False


def _live_member(stat_path: Path, pgid: int) -> bool:
    try:
        text = stat_path.read_text()
    except OSError:
        return False
    # "pid (comm) state ppid pgrp ...": comm may contain spaces, so split after the last ")".
    state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
    return int(pgrp) == pgid and state not in ("Z", "X")


def _account(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _require_account(name: str, hint: str) -> None:
    if _account(name) is None:
        raise DovecotError(f"Dovecot runs helper processes as {name!r}, which is missing ({hint})")


def start_dovecot(root: Path, **options: str) -> Dovecot:
    server = Dovecot(root, **options)
    for attempt in range(3):
        try:
            server.start()
            return server
        except DovecotError as error:
            # free_port() races with every other program on the machine: retry on a clash.
            if "Address already in use" not in str(error) or attempt == 2:
                server.close()
                raise
            server.ports = Ports.pick()
    raise AssertionError("unreachable")


def oauth2_config(
    root: Path, introspection_url: str, mechanisms: str = "xoauth2 oauthbearer"
) -> str:
    """Dovecot's oauth2 passdb checking access tokens at the provider's introspection endpoint
    (RFC 7662, POSTed as token=...), for the token `mechanisms` only; passwords keep the
    passwd-file passdb (see password_mechanisms).

    The provider names the account by its address; username_format reduces it the way
    auth_username_format (%Ln) reduces the login, so "name" and "name@example.test" both
    match the token of name@example.test, and nobody else's token does.
    """
    conf = root / "dovecot-oauth2.conf.ext"
    conf.write_text(
        f"introspection_url = {introspection_url}\n"
        "introspection_mode = post\n"
        "force_introspection = yes\n"
        "username_attribute = email\n"
        "username_format = %Ln\n"
        "active_attribute = active\n"
        "active_value = true\n"
    )
    conf.chmod(0o644)  # the auth process runs unprivileged
    return f"""
auth_mechanisms = plain login {mechanisms}
passdb {{
  driver = oauth2
  mechanisms = {mechanisms}
  args = {conf}
}}
"""


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    server = start_dovecot(tmp_path_factory.mktemp("dovecot"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def dovecot_oauth(tmp_path_factory: pytest.TempPathFactory, oauth_server) -> Iterator[Dovecot]:
    """A second Dovecot that also takes OAuth2 access tokens from the local provider, over
    OAUTHBEARER and XOAUTH2 (as Gmail does)."""
    yield from _oauth_dovecot(tmp_path_factory, oauth_server, "xoauth2 oauthbearer")


@pytest.fixture(scope="session")
def dovecot_xoauth2(tmp_path_factory: pytest.TempPathFactory, oauth_server) -> Iterator[Dovecot]:
    """Like dovecot_oauth, but offering XOAUTH2 only (as Microsoft 365 does)."""
    yield from _oauth_dovecot(tmp_path_factory, oauth_server, "xoauth2")


def _oauth_dovecot(
    tmp_path_factory: pytest.TempPathFactory, oauth_server, mechanisms: str
) -> Iterator[Dovecot]:
    root = tmp_path_factory.mktemp("dovecot-oauth")
    shared = _shared_dir()  # readable by Dovecot's auth process, unlike the pytest temp dir
    extra = oauth2_config(shared, f"{oauth_server.url}/introspect", mechanisms)
    server = start_dovecot(root, extra_config=extra, password_mechanisms="plain login")
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture
def mail_user(dovecot: Dovecot) -> MailUser:
    return dovecot.add_user()
