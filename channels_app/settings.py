"""Postroom settings: the environment is read here and nowhere else.

A laptop needs no environment at all: SQLite and a file-system broker under var/, and keys
generated there once. Production sets DEBUG=false and must then supply real secrets.
Every key is listed, with its default, in .env.example and README.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from channels_app import devkeys

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def envsecret(name: str, default: str | None = None) -> str | None:
    """NAME, or the contents of the file named by NAME_FILE (Docker secrets)."""
    if path := env.str(f"{name}_FILE", default=""):
        return Path(path).read_text().strip()
    return env.str(name, default=default)


def _public_host(url: str) -> str:
    """The host of a URL, or a placeholder name where it is an address or localhost."""
    host = urlsplit(url).hostname or ""
    looks_local = host in ("", "localhost") or host.replace(".", "").isdigit() or ":" in host
    return "postroom.localhost" if looks_local else host


# --- Core -----------------------------------------------------------------------------------

DEBUG = env.bool("DEBUG", default=True)
VAR_DIR = Path(env.str("POSTROOM_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = envsecret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. With DEBUG off Postroom needs a real one: set SECRET_KEY "
            "(or SECRET_KEY_FILE) to a long random string."
        )
    SECRET_KEY = devkeys.load_or_create(VAR_DIR / "secret_key", devkeys.new_secret_key)

# Fernet keys for secrets at rest, newest first, comma separated. The first encrypts;
# all of them decrypt, so a key can be rotated with `manage.py rotate_secrets`.
POSTROOM_ENCRYPTION_KEYS = [
    k.strip() for k in (envsecret("POSTROOM_ENCRYPTION_KEYS") or "").split(",") if k.strip()
]
if not POSTROOM_ENCRYPTION_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "POSTROOM_ENCRYPTION_KEYS is not set. With DEBUG off Postroom needs the Fernet key "
            "that encrypts mailbox passwords and tokens: generate one with `python -c 'from "
            "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
        )
    POSTROOM_ENCRYPTION_KEYS = [
        devkeys.load_or_create(VAR_DIR / "encryption_key", devkeys.new_fernet_key)
    ]

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
POSTROOM_BASE_URL = env.str("POSTROOM_BASE_URL", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.forms",
    "django_celery_beat",
    "mailboxes",
    "cases",
    "pollers",
    "channels_app",  # the project's own system checks (channels_app/checks.py)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files straight from gunicorn, compressed and cached forever under hashed names.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "channels_app.urls"
WSGI_APPLICATION = "channels_app.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Widgets render from templates/ too (the secret widget lives in templates/mailboxes/).
FORM_RENDERER = "django.forms.renderers.TemplatesSetting"

# --- Database -------------------------------------------------------------------------------
# SQLite is shared by web, worker and beat: WAL lets readers run beside the writer, IMMEDIATE
# transactions take the write lock up front (no deadlock on lock upgrade), and the timeout
# waits for it instead of failing with "database is locked".

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'postroom.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # A file, not :memory:, so tests may use threads and subprocesses against one database;
    # one per test run, so two runs side by side never share (or delete) each other's.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n, static, media -------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Agents sign in at /cases/login/; the admin keeps its own sign-in page.
LOGIN_URL = "cases:login"
LOGIN_REDIRECT_URL = "cases:list"
LOGOUT_REDIRECT_URL = "cases:login"
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default="") or VAR_DIR / "static")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns at every start without it
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed names need `collectstatic` first (the image runs it); a laptop serves from source.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Stored mail and attachments in an S3-compatible bucket (pip install 'postroom[s3]') instead
# of MEDIA_ROOT, so every machine sees the same files. Credentials: AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY in the environment (boto3 reads them), or the machine's role.
if POSTROOM_S3_BUCKET := env.str("POSTROOM_S3_BUCKET", default=""):
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": POSTROOM_S3_BUCKET,
            "endpoint_url": env.str("POSTROOM_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("POSTROOM_S3_REGION", default="") or None,
            "location": env.str("POSTROOM_S3_PREFIX", default=""),
            "default_acl": None,  # private: files are served only through Postroom's views
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }

if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)

# --- Celery ---------------------------------------------------------------------------------
# The default broker is a pair of folders under var/: no service to install on a laptop.

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT = "channels_app.broker:Transport"  # messages appear whole
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # A worker looks for new tasks this often (kombu's default is 1 s): a poll that IMAP
        # IDLE asked for should not wait in a folder. About 0.5% of a core while idle (bench
        # idle, docs/decisions.md); Redis, the production broker, needs no polling.
        "polling_interval": 0.05,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# --- Postroom -------------------------------------------------------------------------------

POSTROOM_ADMIN_USER = env.str("POSTROOM_ADMIN_USER", default="admin")
POSTROOM_ADMIN_EMAIL = env.str("POSTROOM_ADMIN_EMAIL", default="admin@localhost")
POSTROOM_ADMIN_PASSWORD = envsecret("POSTROOM_ADMIN_PASSWORD", default="")

# Flows: what happens to each received email (seed 002's "flow schema"). One dict of dotted
# paths, imported only when a message is processed; a deployment adds its own with
# POSTROOM_EXTRA_FLOWS='{"name": ["Label", "Description", "package.module.handler"]}'.
POSTROOM_FLOWS = {
    "create_case": (
        "Create case",
        "Create a case for a new conversation, or add the email to its case (default).",
        "cases.flows.create_case",
    ),
    "webhook": (
        "Webhook",
        "Create or update the case as by default, and POST a signed JSON summary of the email "
        "to the channel's webhook URL (retried until it answers 2xx).",
        "cases.flows.webhook",
    ),
    "task_queue": (
        "Inbound task queue",
        "Keep the email on the channel's queue; an agent picks the next one, which opens a case "
        "assigned to them. Replies to its case join it as usual.",
        "cases.queue.queue_flow",
    ),
    **{k: tuple(v) for k, v in env.json("POSTROOM_EXTRA_FLOWS", default={}).items()},
}

# Deployment-wide OAuth apps: a Google or Microsoft channel with no client ID of its own
# uses these, so an administrator connects a mailbox with a name and an address only.
POSTROOM_GOOGLE_CLIENT_ID = env.str("POSTROOM_GOOGLE_CLIENT_ID", default="")
POSTROOM_GOOGLE_CLIENT_SECRET = envsecret("POSTROOM_GOOGLE_CLIENT_SECRET", default="")
POSTROOM_MICROSOFT_CLIENT_ID = env.str("POSTROOM_MICROSOFT_CLIENT_ID", default="")
POSTROOM_MICROSOFT_CLIENT_SECRET = envsecret("POSTROOM_MICROSOFT_CLIENT_SECRET", default="")

# Hosts an administrator enters are resolved and refused when they fall in these networks, so
# "test connection" cannot probe the Postroom host or the cloud's metadata service.
# Operators may add private ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7).
POSTROOM_BLOCKED_NETWORKS = env.list(
    "POSTROOM_BLOCKED_NETWORKS",
    default=[
        "0.0.0.0/8",  # "this host": connects to loopback on Linux
        "127.0.0.0/8",
        "::1/128",
        "169.254.0.0/16",  # link-local, including 169.254.169.254 metadata
        "fe80::/10",
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "fd00:ec2::254/128",  # AWS metadata over IPv6
    ],
)
POSTROOM_SENDGRID_API_URL = env.str("POSTROOM_SENDGRID_API_URL", default="https://api.sendgrid.com")
# Raw messages up to this size sit in their database row; larger ones go to file storage.
POSTROOM_RAW_INLINE_MAX = env.int("POSTROOM_RAW_INLINE_MAX", default=256 * 1024)
# A poll holds its channel's lease this long between renewals (after every batch); a crashed
# worker's channel is polled again once it expires.
POSTROOM_POLL_LEASE_SECONDS = env.int("POSTROOM_POLL_LEASE_SECONDS", default=300)
POSTROOM_POLL_MAX_BACKOFF_SECONDS = env.int("POSTROOM_POLL_MAX_BACKOFF_SECONDS", default=3600)
# IMAP IDLE (`manage.py listen`): IDLE is re-issued this often (RFC 2177: within 29 minutes);
# channels on push are still polled this often (or at their refresh interval if longer) as a
# safety net; a listener holds its channels under a lease this long, renewed every third of
# it, and looks for added, edited and deleted channels this often.
POSTROOM_IDLE_RENEW_SECONDS = env.int("POSTROOM_IDLE_RENEW_SECONDS", default=540)
POSTROOM_IDLE_SAFETY_POLL_SECONDS = env.int("POSTROOM_IDLE_SAFETY_POLL_SECONDS", default=900)
POSTROOM_IDLE_LEASE_SECONDS = env.float("POSTROOM_IDLE_LEASE_SECONDS", default=60.0)
POSTROOM_IDLE_SYNC_SECONDS = env.float("POSTROOM_IDLE_SYNC_SECONDS", default=2.0)
# Message-IDs of sent mail end in @this-domain (RFC 5322 3.6.4: unique, on a domain we own).
# Empty (as in .env.example) means the default too: "<…@>" would not be a Message-ID.
POSTROOM_MESSAGE_ID_DOMAIN = env.str("POSTROOM_MESSAGE_ID_DOMAIN", default="") or _public_host(
    POSTROOM_BASE_URL
)
# Outbox: attempts before a transiently failing message is given up, and SMTP sessions one
# channel may hold at once (providers limit concurrent connections).
POSTROOM_OUTBOX_MAX_ATTEMPTS = env.int("POSTROOM_OUTBOX_MAX_ATTEMPTS", default=8)
POSTROOM_OUTBOX_SESSIONS_PER_CHANNEL = env.int("POSTROOM_OUTBOX_SESSIONS_PER_CHANNEL", default=2)
POSTROOM_CONNECT_TIMEOUT = env.float("POSTROOM_CONNECT_TIMEOUT", default=15.0)
# Cases: a received file larger than this is listed on its message but not kept; one address
# gets at most this many automatic replies (acknowledgement, refusal) an hour.
POSTROOM_ATTACHMENT_MAX_BYTES = env.int("POSTROOM_ATTACHMENT_MAX_BYTES", default=10 * 2**20)
POSTROOM_AUTO_REPLIES_PER_HOUR = env.int("POSTROOM_AUTO_REPLIES_PER_HOUR", default=3)
# A held message from an unknown sender waits this long for the sender to confirm, then stays
# kept, without a case. Webhook deliveries are tried this many times, backing off up to an hour.
POSTROOM_CONFIRMATION_HOURS = env.int("POSTROOM_CONFIRMATION_HOURS", default=72)
POSTROOM_WEBHOOK_MAX_ATTEMPTS = env.int("POSTROOM_WEBHOOK_MAX_ATTEMPTS", default=8)
# Seconds a webhook endpoint has to answer before the attempt counts as failed (and retried).
POSTROOM_WEBHOOK_TIMEOUT = env.float("POSTROOM_WEBHOOK_TIMEOUT", default=10.0)

# --- Health, metrics, round-trip probes (issue 11) -------------------------------------------
# /healthz fails when beat's heartbeat is older than this, or (if required) no IMAP IDLE
# listener runs. /metrics takes `Authorization: Bearer <token>`; without a token set, only
# direct requests from this machine (loopback, not through a proxy). With Celery's prefork
# workers set PROMETHEUS_MULTIPROC_DIR (a folder shared with web, emptied at start, see README).
POSTROOM_HEALTH_BEAT_MAX_AGE = env.int("POSTROOM_HEALTH_BEAT_MAX_AGE", default=120)
POSTROOM_HEALTH_REQUIRE_LISTENER = env.bool("POSTROOM_HEALTH_REQUIRE_LISTENER", default=False)
POSTROOM_METRICS_TOKEN = envsecret("POSTROOM_METRICS_TOKEN", default="")
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
# prometheus_client's mode is fixed before the first counter exists, so here: the folder is
# created when missing; one that cannot be used leaves this process counting in memory (and
# saying why on stderr) instead of failing on every counter. Empty means unset.
from channels_app.metrics_folder import multiprocess_configure  # noqa: E402 - see above

multiprocess_configure(PROMETHEUS_MULTIPROC_DIR)
# A channel's round-trip probe turns red after this many missed in a row (amber before).
POSTROOM_ROUND_TRIP_RED_AFTER = env.int("POSTROOM_ROUND_TRIP_RED_AFTER", default=2)

# --- Logging --------------------------------------------------------------------------------
# LOG_FORMAT=json writes one JSON object a line (for log shippers); plain otherwise. Both
# carry the channel and the Celery task a line was written for, where there is one.

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "channels_app.logging.ContextFilter"}},
    "formatters": {
        "plain": {"()": "channels_app.logging.PlainFormatter"},
        "json": {"()": "channels_app.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": sys.stderr,
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["context"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # httpx logs every request's URL at INFO; webhook URLs often carry a token.
    "loggers": {"httpx": {"level": "WARNING"}},
}
# Workers log through LOGGING above, not Celery's own handler, so LOG_FORMAT holds there too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
