"""The forms of the case page's actions: reply, status, assignment, split, merge, tasks.

They parse and validate input only; the writes are in cases.actions and cases.tasks.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from cases.access import cases_for
from cases.actions import MAX_REPLY_FILES, assignable_agents
from cases.models import Case, CaseMessage
from mailboxes.compose import OutgoingAttachment

REASON = forms.CharField(
    required=False,
    max_length=2000,
    widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Why (kept on the case's history)"}),
)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    widget = MultipleFileInput

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else [data] if data else []
        return [super(MultipleFileField, self).clean(f, initial) for f in files]


def _addresses(value: str) -> list[str]:
    found = [a.strip() for a in value.replace(";", ",").split(",") if a.strip()]
    for address in found:
        try:
            validate_email(address)
        except ValidationError:
            raise ValidationError(f"{address} is not an email address.") from None
    return found


class ReplyForm(forms.Form):
    from_address = forms.ChoiceField(label="From")
    to = forms.CharField(max_length=2000, help_text="Separate addresses with commas.")
    cc = forms.CharField(label="Cc", max_length=2000, required=False)
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 10}), max_length=200_000)
    state_after = forms.ChoiceField(
        label="Then set the status",
        required=False,
        choices=[
            ("", "Leave it as it is"),
            (Case.State.PENDING, "Pending: waiting on the customer"),
            (Case.State.SOLVED, "Solved"),
        ],
    )
    files = MultipleFileField(
        label="Attachments",
        required=False,
        help_text=(
            f"Up to {MAX_REPLY_FILES} files, "
            f"{settings.POSTROOM_ATTACHMENT_MAX_BYTES // 2**20} MB together."
        ),
    )

    def __init__(self, *args, case: Case, **kwargs):
        super().__init__(*args, **kwargs)
        mailbox = case.mailbox
        choices = [(mailbox.email_address, _labelled(mailbox.from_name, mailbox.email_address))]
        for alias in mailbox.aliases.all():
            name = alias.display_name or mailbox.from_name
            choices.append((alias.address, _labelled(name, alias.address)))
        self.fields["from_address"].choices = choices

    def clean_to(self) -> list[str]:
        found = _addresses(self.cleaned_data["to"])
        if not found:
            raise ValidationError("Name at least one recipient.")
        return found

    def clean_cc(self) -> list[str]:
        return _addresses(self.cleaned_data["cc"])

    def clean_files(self) -> list[OutgoingAttachment]:
        files = self.cleaned_data["files"]
        if len(files) > MAX_REPLY_FILES:
            raise ValidationError(f"Attach at most {MAX_REPLY_FILES} files.")
        limit = settings.POSTROOM_ATTACHMENT_MAX_BYTES
        if sum(f.size for f in files) > limit:
            raise ValidationError(f"The files are larger than {limit // 2**20} MB together.")
        return [OutgoingAttachment(f.name, f.read(), f.content_type or "") for f in files if f.name]


def _labelled(name: str, address: str) -> str:
    return f"{name} <{address}>" if name else address


class StateForm(forms.Form):
    state = forms.ChoiceField(label="Status", choices=Case.State.choices)
    reason = REASON


class AssignForm(forms.Form):
    assignee = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="Nobody", label="Assign to"
    )
    reason = REASON

    def __init__(self, *args, case: Case, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["assignee"].queryset = assignable_agents(mailbox=case.mailbox)
        self.fields["assignee"].label_from_instance = lambda u: (
            u.get_full_name() or u.get_username()
        )


class SplitForm(forms.Form):
    message = forms.ModelChoiceField(queryset=None, label="Message")
    reason = forms.CharField(max_length=2000, widget=REASON.widget)

    def __init__(self, *args, case: Case, **kwargs):
        super().__init__(*args, **kwargs)
        received = case.messages.filter(direction=CaseMessage.Direction.IN)
        self.fields["message"].queryset = received.order_by("date", "pk")
        self.fields["message"].label_from_instance = lambda m: (
            f"{m.date:%Y-%m-%d %H:%M} {m.sender}: {m.subject or '(no subject)'}"
        )


class MergeForm(forms.Form):
    target = forms.IntegerField(label="Into case #", min_value=1)
    reason = forms.CharField(max_length=2000, widget=REASON.widget)

    def __init__(self, *args, case: Case, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.case, self.user = case, user

    def clean_target(self) -> Case:
        number = self.cleaned_data["target"]
        # Only the agent's own cases on this channel: a number elsewhere reads as no case.
        target = cases_for(self.user).filter(pk=number, mailbox_id=self.case.mailbox_id).first()
        if target is None:
            raise ValidationError(f"There is no case #{number} on this channel.")
        return target


class TaskForm(forms.Form):
    title = forms.CharField(max_length=300)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    assignee = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="Nobody", label="Assign to"
    )
    assignee_address = forms.EmailField(
        required=False,
        label="or mail it to",
        help_text="Another person's address; the assignee's own address is used otherwise.",
    )

    def __init__(self, *args, case: Case, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["assignee"].queryset = assignable_agents(mailbox=case.mailbox)
        self.fields["assignee"].label_from_instance = lambda u: (
            u.get_full_name() or u.get_username()
        )
