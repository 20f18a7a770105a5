"""Shared fixtures. The real servers live in tests/servers/, one module each."""

pytest_plugins = [
    "tests.browser",
    "tests.launch",
    "tests.logcheck",
    "tests.servers.dovecot",
    "tests.servers.http_sink",
    "tests.servers.oauth",
    "tests.servers.proxy",
    "tests.servers.sendgrid",
    "tests.servers.smtp",
]
