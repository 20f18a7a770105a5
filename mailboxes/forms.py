"""The channel form: which fields apply, what they default to, and the login tried on save."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.template import Template, TemplateSyntaxError
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from mailboxes import presets
from mailboxes.models import Alias, Mailbox
from mailboxes.services import ConnectionReport, mailbox_probe, network_policy, status_fields
from providers.errors import AddressBlocked, ProviderError
from providers.webhook import webhook_url_check

SECRET_FIELDS = (
    "password",
    "smtp_password",
    "sendgrid_api_token",
    "oauth_client_secret",
    "webhook_secret",
)

# The form's fields, grouped as the product pages group them; the admin's fieldsets read this.
FIELD_GROUPS: dict[str, list[str]] = {
    "Channel": [
        "name",
        "description",
        "enabled",
        "email_address",
        "from_name",
        "reply_to",
        "preset",
    ],
    "Authentication": [
        "auth_type",
        "oauth_provider",
        "oauth_client_id",
        "oauth_client_secret",
        "clear_oauth_client_secret",
        "oauth_scope",
        "oauth_grant_type",
        "oauth_auth_url",
        "oauth_token_url",
        "oauth_redirect_uri",
        "oauth_discovery_url",
        "oauth_login",
        "oauth_tenant",
        "oauth_shared_mailbox",
    ],
    "Receive emails (incoming server)": [
        "listen",
        "protocol",
        "incoming_host",
        "incoming_port",
        "incoming_security",
        "username",
        "password",
        "clear_password",
        "folder",
        "refresh_interval",
        "trust_self_signed",
        "after_import",
        "move_to_folder",
        "max_message_size",
    ],
    "Send emails (outgoing server)": [
        "server_type",
        "smtp_host",
        "smtp_port",
        "smtp_security",
        "smtp_username",
        "smtp_password",
        "clear_smtp_password",
        "sendgrid_api_token",
        "clear_sendgrid_api_token",
        "sent_folder",
        "copy_to_sent",
    ],
    "Email handling": [
        "case_response_template",
        "attachments_allowed",
        "process_task_replies",
        "end_of_message_marker",
        "size_notice_template",
        "retention_days",
    ],
    "Email filtering": [
        "flow",
        "allow_new_case",
        "refusal_template",
        "auto_ack_template",
        "sender_filter",
        "confirm_unknown_senders",
        "create_contact_for_unknown",
        "webhook_url",
        "webhook_secret",
        "clear_webhook_secret",
    ],
    "Agents": ["agent_groups"],
    "Round-trip probe": ["round_trip_enabled", "round_trip_interval", "round_trip_limit"],
    "Save": ["save_anyway_offline"],
}
ROUND_TRIP_TIMES = ("round_trip_interval", "round_trip_limit")
FORM_ONLY_FIELDS = {"save_anyway_offline", *(f"clear_{name}" for name in SECRET_FIELDS)}
INCOMING_REQUIRED = ("incoming_host", "incoming_port")
SMTP_REQUIRED = ("smtp_host", "smtp_port")


def formfield(field, **kwargs):
    """Model field -> form field; a URL typed without a scheme means https, never http."""
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


def flow_choices() -> list[tuple[str, str]]:
    return [(name, label) for name, (label, _desc, _path) in settings.POSTROOM_FLOWS.items()]


def flow_help() -> str:
    """Every registered flow with its description, under the flow choice."""
    flows = ((label, desc) for label, desc, _path in settings.POSTROOM_FLOWS.values())
    return format_html_join(mark_safe("<br>"), "<b>{}</b>: {}", flows)


class SecretInput(forms.PasswordInput):
    """Never renders the stored value; shows whether one is set beside an empty box."""

    template_name = "mailboxes/widgets/secret.html"

    def __init__(self, attrs=None):
        # new-password: browsers must not autofill the administrator's own password here.
        super().__init__({"autocomplete": "new-password", **(attrs or {})}, render_value=False)
        self.is_set = False

    def get_context(self, name, value, attrs):
        context = super().get_context(name, None, attrs)
        context["widget"]["is_set"] = self.is_set
        return context


class MailboxForm(forms.ModelForm):
    preset = forms.ChoiceField(
        choices=presets.PRESET_CHOICES,
        required=False,
        initial="generic",
        help_text="Fills the servers, ports and security you leave empty.",
    )
    flow = forms.ChoiceField(choices=flow_choices, help_text="What happens to each received email.")
    clear_password = forms.BooleanField(required=False, label="Remove the stored password")
    clear_smtp_password = forms.BooleanField(
        required=False, label="Remove the stored SMTP password"
    )
    clear_sendgrid_api_token = forms.BooleanField(
        required=False, label="Remove the stored API token"
    )
    clear_oauth_client_secret = forms.BooleanField(
        required=False, label="Remove the stored client secret"
    )
    clear_webhook_secret = forms.BooleanField(
        required=False, label="Remove the stored webhook secret"
    )
    save_anyway_offline = forms.BooleanField(
        label="Save anyway, offline",
        required=False,
        help_text="Save even though the login failed. The channel stays offline until a "
        "connection test passes.",
    )

    class Meta:
        model = Mailbox
        fields = [
            name
            for group in FIELD_GROUPS.values()
            for name in group
            if name not in FORM_ONLY_FIELDS
        ]
        widgets = {name: SecretInput for name in SECRET_FIELDS}
        formfield_callback = formfield

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.warnings: list[str] = []
        self.report: ConnectionReport | None = None
        self.fields["flow"].help_text = flow_help()
        for name in ROUND_TRIP_TIMES:
            self.fields[name].required = False
        for name in SECRET_FIELDS:
            if name in self.fields:
                self.fields[name].widget.is_set = bool(getattr(self.instance, name))
                self.fields[name].help_text = _secret_help(self.fields[name].help_text)

    def _resolve_secrets(self, data) -> None:
        """An empty secret box keeps the stored value; the "remove" box clears it."""
        for name in SECRET_FIELDS:
            if data.get(f"clear_{name}"):
                data[name] = ""
            elif not data.get(name):
                data[name] = getattr(self.instance, name)

    def clean_email_address(self):
        address = self.cleaned_data["email_address"].strip()
        clash = Mailbox.objects.filter(email_address__iexact=address).exclude(pk=self.instance.pk)
        if clash.exists():
            raise ValidationError(
                "Another channel (%(name)s) already uses this address.",
                params={"name": clash.first().name},
            )
        return address

    def clean_case_response_template(self):
        return self._template_compiles("case_response_template")

    def clean_auto_ack_template(self):
        return self._template_compiles("auto_ack_template")

    def clean_refusal_template(self):
        return self._template_compiles("refusal_template")

    def clean_size_notice_template(self):
        return self._template_compiles("size_notice_template")

    def _template_compiles(self, name: str) -> str:
        text = self.cleaned_data[name]
        try:
            Template(text)
        except TemplateSyntaxError as exc:
            message = "This template does not compile: %(error)s"
            raise ValidationError(message, params={"error": exc}) from exc
        return text

    # --- Whole-form rules -------------------------------------------------------------------

    def clean(self):
        data = super().clean()
        self._resolve_secrets(data)
        if data.get("email_address") and not data.get("username"):
            data["username"] = data["email_address"]  # seed 001: defaults to the address
        self._apply_preset(data)
        self._default_ports(data)
        if data.get("listen"):
            self._require(data, INCOMING_REQUIRED, "when the channel receives emails")
            self._clean_after_import(data)
        if data.get("server_type") == Mailbox.ServerType.SMTP:
            self._require(data, SMTP_REQUIRED, "to send through SMTP")
        elif data.get("server_type") == Mailbox.ServerType.SENDGRID:
            self._require(data, ["sendgrid_api_token"], "to send through SendGrid")
        if data.get("auth_type") == Mailbox.AuthType.OAUTH2:
            self._clean_oauth(data)
        elif data.get("listen"):
            self._require(data, ["password"], "to sign in to the incoming server")
        self._warn_port_security(data)
        self._clean_webhook(data)
        self._clean_round_trip(data)
        return data

    def _clean_round_trip(self, data) -> None:
        for name in ROUND_TRIP_TIMES:  # left empty: keep what is set (or the default)
            if data.get(name) is None and name not in self.errors:
                data[name] = getattr(self.instance, name)
        interval, limit = data.get("round_trip_interval"), data.get("round_trip_limit")
        if interval and limit and limit >= interval:
            self.add_error(
                "round_trip_limit",
                "A probe must be due back before the next one goes: make this shorter than "
                "the interval between probes.",
            )
        if data.get("round_trip_enabled") and not data.get("listen"):
            self.add_error(
                "round_trip_enabled", "Round-trip probes need the channel to receive emails."
            )

    def _clean_webhook(self, data) -> None:
        url = data.get("webhook_url")
        if data.get("flow") == "webhook":
            self._require(data, ["webhook_url"], "for the webhook flow")
            if url and not data.get("webhook_secret"):
                self.warnings.append(
                    "No webhook secret: the POSTs go unsigned, so the receiver cannot tell "
                    "them from forgeries."
                )
        if not url:
            return
        try:
            webhook_url_check(url, network_policy())
        except AddressBlocked as err:
            self.add_error(
                "webhook_url",
                f"{err} Postroom does not post there: use the receiver's public address.",
            )
        except ProviderError as err:
            self.warnings.append(f"Webhook URL: {err}")

    def _clean_after_import(self, data) -> None:
        action = data.get("after_import")
        imap_only = (Mailbox.AfterImport.SEEN, Mailbox.AfterImport.MOVE)
        if action in imap_only and data.get("protocol") == Mailbox.Protocol.POP3:
            self.add_error("after_import", "POP3 can only leave mail on the server or delete it.")
        if action == Mailbox.AfterImport.MOVE:
            self._require(data, ["move_to_folder"], "to move imported mail")
            if (data.get("move_to_folder") or "").casefold() == (
                data.get("folder") or ""
            ).casefold():
                self.add_error(
                    "move_to_folder",
                    "Moving mail into the folder it is read from "
                    "would import it again: choose another folder.",
                )

    def _require(self, data, names, why: str) -> None:
        for name in names:
            if data.get(name) in (None, ""):
                label = self.fields[name].label
                self.add_error(name, f"{label} is required {why}.")

    def _apply_preset(self, data) -> None:
        preset = presets.PRESETS.get(data.get("preset") or "generic")
        endpoint = {"imap": preset.imap, "pop3": preset.pop3}.get(data.get("protocol"))
        if endpoint and not data.get("incoming_host"):
            data["incoming_host"] = endpoint.host
            data["incoming_port"] = endpoint.port
            data["incoming_security"] = endpoint.security
        if preset.smtp and not data.get("smtp_host"):
            data["smtp_host"] = preset.smtp.host
            data["smtp_port"] = preset.smtp.port
            data["smtp_security"] = preset.smtp.security
        if data.get("preset") and data.get("preset") != self.instance.preset:
            data["copy_to_sent"] = preset.copy_to_sent
            data["sent_folder"] = preset.sent_folder
            if preset.oauth_provider and not data.get("oauth_provider"):
                data["oauth_provider"] = preset.oauth_provider

    def _default_ports(self, data) -> None:
        """An empty port takes the usual one for the protocol and security."""
        pairs = [
            ("incoming_port", data.get("protocol"), data.get("incoming_security")),
            ("smtp_port", "smtp", data.get("smtp_security")),
        ]
        for name, protocol, security in pairs:
            if data.get(name) is None and name not in self.errors:
                host_field = "incoming_host" if name == "incoming_port" else "smtp_host"
                if data.get(host_field):
                    data[name] = presets.DEFAULT_PORTS.get((protocol, security))

    def _clean_oauth(self, data) -> None:
        provider = data.get("oauth_provider")
        if not provider:
            self.add_error(
                "oauth_provider", "Choose the OAuth provider: Google, Microsoft or custom."
            )
            return
        if provider == Mailbox.OAuthProvider.CUSTOM:
            self._require(data, ["oauth_client_id"], "for a custom OAuth provider")
            if not data.get("oauth_discovery_url") and not (
                data.get("oauth_auth_url") and data.get("oauth_token_url")
            ):
                self.add_error(
                    "oauth_discovery_url",
                    "Give the discovery URL, or both the auth URL and the access token URL.",
                )
            return
        default_id = getattr(settings, f"POSTROOM_{provider.upper()}_CLIENT_ID")
        if not data.get("oauth_client_id") and not default_id:
            self.add_error(
                "oauth_client_id",
                f"No client ID: enter this channel's, or set POSTROOM_{provider.upper()}_CLIENT_ID "
                "for the whole deployment.",
            )

    def _warn_port_security(self, data) -> None:
        checks = [
            (
                "Incoming",
                data.get("incoming_port"),
                data.get("incoming_security"),
                data.get("listen"),
            ),
            (
                "SMTP",
                data.get("smtp_port"),
                data.get("smtp_security"),
                data.get("server_type") == Mailbox.ServerType.SMTP,
            ),
        ]
        for side, port, security, applies in checks:
            if not applies or port is None:
                continue
            if security == "ssl" and port in presets.PLAIN_OR_STARTTLS_PORTS:
                self.warnings.append(
                    f"{side} port {port} usually speaks plain text or STARTTLS, not SSL/TLS."
                )
            elif security in ("starttls", "none") and port in presets.IMPLICIT_TLS_PORTS:
                self.warnings.append(f"{side} port {port} usually expects SSL/TLS from the start.")

    # --- The login, tried on save (seed 003) -------------------------------------------------

    def _post_clean(self):
        super()._post_clean()
        if self.errors or not self.cleaned_data.get("enabled"):
            return
        self.report = mailbox_probe(mailbox=self.instance)
        if self.report.ok:
            self._record_status()
        elif self.cleaned_data.get("save_anyway_offline"):
            self.instance.enabled = False
            self._record_status()
        else:
            self.add_error(
                None,
                f"{self.report.summary(self.instance)} Fix the settings, or tick "
                "“Save anyway, offline” to keep them and connect later.",
            )

    def _record_status(self) -> None:
        fields = status_fields(mailbox=self.instance, report=self.report, now=timezone.now())
        for name, value in fields.items():
            setattr(self.instance, name, value)


class AliasForm(forms.ModelForm):
    class Meta:
        model = Alias
        fields = ["address", "display_name"]

    def clean_address(self):
        address = self.cleaned_data["address"].strip()
        mailbox = self.instance.mailbox if self.instance.mailbox_id else None
        if mailbox and address.lower() == mailbox.email_address.lower():
            raise ValidationError("That is the channel's own address, not an alias.")
        return address


def _secret_help(text: str) -> str:
    extra = "Stored encrypted and never shown. Leave empty to keep the stored value."
    return f"{text} {extra}".strip()


class TestMailForm(forms.Form):
    to = forms.EmailField(label="Send to", help_text="An address you can read.")


class FirstSyncForm(forms.Form):
    choice = forms.ChoiceField(
        label="Import",
        choices=Mailbox.FirstSync.choices,
        initial=Mailbox.FirstSync.FROM_NOW,
        widget=forms.RadioSelect,
    )
    days = forms.IntegerField(
        label="Days",
        required=False,
        min_value=1,
        max_value=36500,
        help_text="For “the last N days”: mail that reached the server in this many days.",
    )

    def clean(self):
        data = super().clean()
        if data.get("choice") == Mailbox.FirstSync.DAYS and not data.get("days"):
            self.add_error("days", "Say how many days of older mail to import.")
        return data

    def arguments(self) -> dict:
        return {"choice": self.cleaned_data["choice"], "days": self.cleaned_data.get("days")}
