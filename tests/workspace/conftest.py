"""The actors of the agent workspace: an agent of the support channel, an agent of another
channel (the outsider), and an administrator; and the support channel on real Dovecot."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from tests.cases.conftest import case_of, channel, mail, receive  # noqa: F401
from tests.pollers.conftest import (  # noqa: F401
    connected,
    loopback_allowed,
    make_channel,
    poll,
)

PASSWORD = "correct horse battery staple"


def person(username: str, *, groups=(), **fields) -> User:
    user = User.objects.create_user(username, f"{username}@postroom.test", PASSWORD, **fields)
    user.groups.set(groups)
    return user


@pytest.fixture
def support(channel):  # noqa: F811
    """The support channel, given to the "Support" group."""
    mailbox = channel()
    mailbox.agent_groups.add(Group.objects.create(name="Support"))
    return mailbox


@pytest.fixture
def agent(support):
    return person("alice", groups=support.agent_groups.all())


@pytest.fixture
def outsider(db):
    """An agent of another group, which is given no channel of this test."""
    return person("bob", groups=[Group.objects.create(name="Sales")])


@pytest.fixture
def admin(db):
    return person("root", is_staff=True, is_superuser=True)


@pytest.fixture
def raw_reader(agent):
    agent.user_permissions.add(Permission.objects.get(codename="view_raw_message"))
    return User.objects.get(pk=agent.pk)  # permissions are cached on the instance


def client_for(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)


def html_mail(
    html: str,
    *,
    subject: str = "Broken kettle",
    sender: str = "Carol Customer <carol@example.org>",
    text: str = "My kettle does not boil.",
    inline_png_cid: str = "",
    attachment: tuple[str, bytes] | None = None,
) -> bytes:
    """A mail as a customer's client writes it: text and HTML, an inline image, a file."""
    raw = mail(subject=subject, sender=sender, body=text)
    message = message_from_bytes(raw, policy=default)
    message.add_alternative(html, subtype="html")
    if inline_png_cid:
        message.get_body(("html",)).add_related(PNG, "image", "png", cid=f"<{inline_png_cid}>")
    if attachment:
        name, data = attachment
        message.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return message.as_bytes()
