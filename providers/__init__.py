"""Everything that speaks a wire protocol: IMAP, POP3, SMTP, SendGrid.

Plain Python with no Django and no project imports: small settings dataclasses in
(`providers.config`), results out, and `providers.errors.ProviderError` subclasses whose
messages an administrator can act on.
"""
