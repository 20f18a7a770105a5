"""An unknown sender confirms they are a person: the one page for people outside Postroom.

A GET only shows the button: mail scanners open every link in a message, and must not confirm.
"""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from cases.confirmations import (
    CONFIRMED,
    EXPIRED,
    USED,
    WAITING,
    confirmation_accept,
    confirmation_state,
)

PAGES = {
    WAITING: (200, "Confirm your message", "Press the button to confirm you sent it.", True),
    CONFIRMED: (200, "Thank you", "Your message has been confirmed and passed on.", False),
    USED: (200, "Already confirmed", "This message was confirmed already.", False),
    EXPIRED: (410, "Link expired", "This link has expired. Your message was kept.", False),
}
NOT_FOUND = (404, "Link not valid", "This confirmation link is not valid.", False)


@never_cache
@require_http_methods(["GET", "POST"])
def confirm(request, token: str):
    if request.method == "POST":
        state = confirmation_accept(token=token)
    else:
        state = confirmation_state(token=token)
    status, title, text, ask = PAGES.get(state, NOT_FOUND)
    context = {"title": title, "text": text, "ask": ask}
    response = render(request, "cases/confirm.html", context, status=status)
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the address
    return response
