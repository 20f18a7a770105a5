"""OAuth2 sign-in on the channel page: the button, the callback, the manual code page.

A mixin of MailboxAdmin, kept apart so the channel module stays small.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from mailboxes.admin.access import ChannelViewsMixin
from mailboxes.models import Mailbox
from mailboxes.oauth import (
    SignInError,
    callback_url,
    code_from_input,
    mailbox_oauth_app,
    mailbox_oauth_finish,
    mailbox_oauth_start,
    mailbox_redirects_back,
    pending_take,
)
from mailboxes.oauth_health import AMBER, credential_facts, credential_warnings, token_summary
from mailboxes.services import mailbox_test_connection
from providers.errors import ProviderError
from providers.oauth import describe_error

OAUTH_FIELDS = ["oauth_sign_in", "oauth_health"]
PROVIDER_NAMES = {"google": "Google", "microsoft": "Microsoft"}


def sign_in_label(mailbox: Mailbox) -> str:
    return f"Sign in with {PROVIDER_NAMES.get(mailbox.oauth_provider, 'provider')}"


def health_badge(mailbox: Mailbox) -> str:
    """For the status column: when the token was refreshed and rotated, and the amber
    warnings' short labels (the whole text on hover). Empty for password channels."""
    summary = token_summary(mailbox)
    if not summary:
        return ""
    warnings = format_html_join(
        "",
        '<br><span class="postroom-credential-warning" style="color:{}" title="{}">'
        "&#9650; {}</span>",
        (
            (AMBER, warning.text, warning.label)
            for warning in credential_warnings(mailbox, timezone.now())
        ),
    )
    return format_html('<br><small class="postroom-token">{}</small>{}', summary, warnings)


def _provider_error(mailbox: Mailbox, query) -> str:
    """The provider's error redirect (RFC 6749 4.1.2.1) in words."""
    app = mailbox_oauth_app(mailbox=mailbox)
    return describe_error(app, query.get("error", ""), query.get("error_description", ""))


def _state_of(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query)).get("state", "")


# The pasted code (or the address holding it) stays out of error reports.
method_sensitive = method_decorator(sensitive_post_parameters("code"))


class OAuthAdminMixin(ChannelViewsMixin):
    @admin.display(description="sign-in")
    def oauth_sign_in(self, mailbox: Mailbox) -> str:
        if not mailbox.pk or mailbox.auth_type != Mailbox.AuthType.OAUTH2:
            return "Not an OAuth2 channel."
        if not mailbox.oauth_refresh_token:
            return f"Not signed in yet: use “{sign_in_label(mailbox)}” above."
        when = timezone.localtime(mailbox.oauth_signed_in_at).strftime("%Y-%m-%d %H:%M")
        expires = mailbox.oauth_expires_at
        until = (
            f"; access token valid until {timezone.localtime(expires).strftime('%H:%M:%S')}"
            if expires
            else ""
        )
        return f"Signed in as {mailbox.oauth_signed_in_as or '(unknown)'} on {when}{until}."

    @admin.display(description="credential health")
    def oauth_health(self, mailbox: Mailbox) -> str:
        if not mailbox.pk or mailbox.auth_type != Mailbox.AuthType.OAUTH2:
            return "-"
        facts = format_html_join(
            "", "<div>{}</div>", ((fact,) for fact in credential_facts(mailbox))
        )
        warnings = format_html_join(
            "",
            '<div class="postroom-credential-warning" style="color:{}">&#9650; {}</div>',
            ((AMBER, w.text) for w in credential_warnings(mailbox, timezone.now())),
        )
        return format_html("{}{}", warnings, facts) if facts or warnings else "-"

    def oauth_urls(self) -> list:
        site = self.admin_site
        return [
            path("oauth/callback/", site.admin_view(self.oauth_callback_view),
                 name="mailboxes_mailbox_oauth_callback"),
            path("<int:pk>/oauth/sign-in/", site.admin_view(require_POST(self.oauth_start_view)),
                 name="mailboxes_mailbox_oauth_start"),
            path("<int:pk>/oauth/manual/", site.admin_view(self.oauth_manual_view),
                 name="mailboxes_mailbox_oauth_manual"),
        ]  # fmt: skip

    def oauth_start_view(self, request: HttpRequest, pk: int):
        mailbox = self.changeable(request, pk)
        if not mailbox_redirects_back(mailbox=mailbox):
            return HttpResponseRedirect(reverse("admin:mailboxes_mailbox_oauth_manual", args=[pk]))
        try:
            url = mailbox_oauth_start(mailbox=mailbox, session=request.session)
        except ProviderError as err:
            messages.error(request, f"{mailbox.name}: the sign-in could not start. {err}")
            return self.back_to_channel(pk)
        return HttpResponseRedirect(url)

    @sensitive_variables("code")
    def oauth_callback_view(self, request: HttpRequest):
        try:
            pending = pending_take(session=request.session, state=request.GET.get("state", ""))
        except SignInError as err:
            messages.error(request, str(err))
            return HttpResponseRedirect(reverse("admin:mailboxes_mailbox_changelist"))
        mailbox = self.changeable(request, pending.mailbox_id)
        if request.GET.get("error"):
            app_error = _provider_error(mailbox, request.GET)
            messages.error(request, f"{mailbox.name}: sign-in failed. {app_error}")
            return self.back_to_channel(mailbox.pk)
        return self._oauth_finish(request, mailbox, pending, request.GET.get("code", ""))

    @method_sensitive
    def oauth_manual_view(self, request: HttpRequest, pk: int):
        mailbox = self.changeable(request, pk)
        if request.method == "POST":
            try:
                pending = pending_take(session=request.session, state=request.POST.get("state", ""))
            except SignInError as err:
                messages.error(request, str(err))
                return HttpResponseRedirect(request.path)
            return self._oauth_finish(
                request, mailbox, pending, code_from_input(request.POST.get("code", ""))
            )
        try:
            url = mailbox_oauth_start(mailbox=mailbox, session=request.session)
        except ProviderError as err:
            messages.error(request, f"{mailbox.name}: the sign-in could not start. {err}")
            return self.back_to_channel(pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": mailbox,
            "title": f"Sign in {mailbox.name} by pasting the code",
            "authorization_url": url,
            "state": _state_of(url),
            "redirect_uri": mailbox.oauth_redirect_uri,
            "callback_url": callback_url(),
        }
        return TemplateResponse(request, "admin/mailboxes/mailbox/oauth_manual.html", context)

    def _oauth_finish(self, request, mailbox: Mailbox, pending, code: str):
        try:
            tokens = mailbox_oauth_finish(mailbox=mailbox, pending=pending, code=code)
        except SignInError as err:
            messages.error(request, f"{mailbox.name}: sign-in failed. {err}")
            return self.back_to_channel(mailbox.pk)
        messages.success(request, f"{mailbox.name}: signed in as {tokens.signed_in_as}.")
        report = mailbox_test_connection(mailbox=mailbox)
        self._report(request, mailbox, report)
        return self.back_to_channel(mailbox.pk)
