"""Django settings, fed by environment variables (see README: "Configuration").

Defaults are safe for a developer's machine: SQLite under ``var/``, no
services, DEBUG off, a secret key generated once into ``var/secret_key``
(never in the repository).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("AUTOPLAY_VAR_DIR", BASE_DIR / "var"))


def _private_dir(path: Path) -> None:
    """Create ``path`` readable by its owner only: it holds the secret key and the SQLite database."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _private_file(path: Path) -> None:
    """Create an empty file (a valid empty SQLite database) readable by its owner only, if missing.

    SQLite gives its -wal and -shm files the database file's permissions.
    """
    if path.parent.is_dir():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_addresses(name: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (Sentinel addresses); a malformed entry stops the start with its name."""
    addresses = []
    for item in env_list(name, ""):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{name}: {item!r} is not host:port")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _secret_key() -> str:
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key:
        return key
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    try:
        _private_dir(VAR_DIR)
        key = secrets.token_urlsafe(50)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key
    except FileExistsError:
        return path.read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured("set DJANGO_SECRET_KEY (var/ is not writable)") from exc


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "csp",
    "axes",  # sign-in lockouts (dashboard/signin.py)
    "ninja",  # serves the API docs' Swagger UI from our own static files, not a CDN
    "autoplay_storage",
    "api",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last: turns a refused sign-in (too many failures) into our lockout page.
    "axes.middleware.AxesMiddleware",
    # After WhiteNoise, which answers static files itself: only pages are marked.
    "dashboard.middleware.no_store",
]

ROOT_URLCONF = "config.urls"

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

ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

_default_db = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(os.environ.get("DATABASE_URL", _default_db), conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    _private_dir(VAR_DIR)
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        _private_file(Path(DATABASES["default"]["NAME"]))
    # Connections are kept (conn_max_age above): a fresh SQLite connection re-reads the
    # schema, which halved the database adapter's sessions/s (bench/engine_database.py).
    # Writers wait for each other (IMMEDIATE + busy timeout) instead of failing
    # with "database is locked"; WAL lets readers run beside the writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not :memory:) so a server subprocess in the tests sees the same data;
    # one per process so concurrent test runs on one machine never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test_db_{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

# Flash messages live server-side: one carries a newly created API key, shown once.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# AxesBackend first: a locked-out sign-in is refused before the password is even checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

# Shared across workers: the API key cache, rate-limit and sign-in counters (docs/security.md).
# With Redis, django-redis on the same server under its own prefix (``autoplay-cache:``, never a
# wire key's ``autoplay:``); otherwise a table of the database (``createcachetable``, run by migrate).
CACHE_KEY_PREFIX = "autoplay-cache"
if os.environ.get("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "autoplay_cache",
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            # Django's default of 300 would cull live entries (the console keeps one per staff member
            # and product, docs/access-and-audit.md); culling takes the lowest keys first.
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }

# Sign-in protection (django-axes; dashboard/signin.py): 5 failures for one user name or 20
# from one address within AXES_COOLOFF_TIME refuse sign-in (the right password too) for that long.
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
SIGNIN_USERNAME_LIMIT = int(os.environ.get("AUTOPLAY_SIGNIN_USERNAME_LIMIT", 5))
SIGNIN_ADDRESS_LIMIT = int(os.environ.get("AUTOPLAY_SIGNIN_ADDRESS_LIMIT", 20))
AXES_FAILURE_LIMIT = "dashboard.signin.failure_limit"
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("AUTOPLAY_SIGNIN_LOCKOUT_MINUTES", 15)))
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # the lockout ends 15 minutes after it began
AXES_LOCKOUT_CALLABLE = "dashboard.signin.lockout_response"
# Counters in Django's cache when it is Redis (atomic INCR); in axes' own table otherwise, whose
# updates are atomic where the database cache's incr (read, then write) is not.
AXES_HANDLER = (
    "axes.handlers.cache.AxesCacheHandler"
    if os.environ.get("REDIS_URL")
    else "axes.handlers.database.AxesDatabaseHandler"
)
AXES_VERBOSE = False
# The client's address (axes' counts, the audit log): the peer's, unless DJANGO_HTTPS=1 says a
# proxy is in front (below). A header any client can send is never trusted on its own.
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:products"
LOGOUT_REDIRECT_URL = "login"

# DJANGO_HTTPS=1 (behind TLS, usually a proxy that sets X-Forwarded-Proto): secure
# cookies, HSTS, the redirect to https and the proxy header, in one switch.
HTTPS = env_bool("DJANGO_HTTPS", False)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = HTTPS or env_bool("DJANGO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", 31_536_000))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
    # The load balancer's probes arrive over plain HTTP from inside.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    # The one proxy in front appends the address it was connected from to X-Forwarded-For: its
    # right-most entry is the client (django-ipware: no proxies listed after the client, at least
    # none required, so entries a client wrote on the left are passed over). Without the header
    # (a probe from inside), the peer's address.
    AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR")
    AXES_IPWARE_PROXY_COUNT = 0
    IPWARE_STRICT = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Every console page: scripts, styles, images and fonts from our own static files only;
# no inline script or style (the one inline style, of the bare 500 page, is allowed by hash).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'sha256-50lfLtPxSVtKEyaDJmbunBgH0XW0Bnf9LOfN5rNroSQ='"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
    }
}

# Request bodies above this are refused with 413 (agents send one snapshot at a time).
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("AUTOPLAY_MAX_BODY_BYTES", 1024 * 1024))
# Seconds a client gets to send its request headers and, once they are in, its whole body: a
# stalled or trickling upload is answered 408 and its connection closed (config.request_body).
AUTOPLAY_BODY_TIMEOUT_S = float(os.environ.get("AUTOPLAY_BODY_TIMEOUT_S", 10))
if not AUTOPLAY_BODY_TIMEOUT_S > 0:
    raise ImproperlyConfigured("AUTOPLAY_BODY_TIMEOUT_S must be a positive number of seconds")

AUTOPLAY_STORAGE = {
    # "redis", "database" or "memory"; empty: redis if REDIS_URL or sentinels are set, else database.
    "PRIMARY": os.environ.get("AUTOPLAY_PRIMARY", ""),
    # REDIS_URL set -> Redis is the primary; unset -> the database adapter.
    "REDIS_URL": os.environ.get("REDIS_URL", ""),
    "REDIS_CLUSTER": env_bool("AUTOPLAY_REDIS_CLUSTER", False),
    "REDIS_TTL_S": int(os.environ["AUTOPLAY_REDIS_TTL_S"]) if os.environ.get("AUTOPLAY_REDIS_TTL_S") else None,
    "REDIS_MAX_CONNECTIONS": int(os.environ.get("AUTOPLAY_REDIS_MAX_CONNECTIONS", 64)),
    # Compare-and-set scripts (Redis 7+); 0: WATCH/MULTI transactions (older servers).
    "REDIS_SCRIPTS": env_bool("AUTOPLAY_REDIS_SCRIPTS", True),
    # States remembered per worker as the base of the next write (0: read before every write).
    "REDIS_STATE_CACHE": int(os.environ.get("AUTOPLAY_REDIS_STATE_CACHE", 4096)),
    # Sentinel: the master named REDIS_SENTINEL_MASTER, found through these sentinels
    # (REDIS_URL then only gives the user, password, database and scheme).
    "REDIS_SENTINELS": env_addresses("AUTOPLAY_REDIS_SENTINELS"),
    "REDIS_SENTINEL_MASTER": os.environ.get("AUTOPLAY_REDIS_SENTINEL_MASTER", ""),
    "REDIS_SENTINEL_PASSWORD": os.environ.get("AUTOPLAY_REDIS_SENTINEL_PASSWORD") or None,
    # A session end waits until this many replicas have it (Redis WAIT), else it is a 503 to retry.
    "REDIS_WAIT_REPLICAS": int(os.environ.get("AUTOPLAY_REDIS_WAIT_REPLICAS", 0)),
    "REDIS_WAIT_TIMEOUT_MS": int(os.environ.get("AUTOPLAY_REDIS_WAIT_TIMEOUT_MS", 1000)),
    "SUMMARIZER": os.environ.get("AUTOPLAY_SUMMARIZER", "autoplay_storage.summarizers.template_summarizer"),
    "SUMMARIZER_TIMEOUT_S": float(os.environ.get("AUTOPLAY_SUMMARIZER_TIMEOUT_S", 30)),
    # autoplay_storage.summarizers.llm_summarizer: any OpenAI-compatible chat endpoint.
    "LLM_BASE_URL": os.environ.get("AUTOPLAY_LLM_BASE_URL", ""),
    "LLM_MODEL": os.environ.get("AUTOPLAY_LLM_MODEL", ""),
    "LLM_API_KEY": os.environ.get("AUTOPLAY_LLM_API_KEY", ""),
    "LLM_TIMEOUT_S": float(os.environ.get("AUTOPLAY_LLM_TIMEOUT_S", 20)),
    "SINK_TIMEOUT_S": float(os.environ.get("AUTOPLAY_SINK_TIMEOUT_S", 1.0)),
    # How often each worker checks the admin's sink configuration and saves sink counters.
    "SINK_REFRESH_S": float(os.environ.get("AUTOPLAY_SINK_REFRESH_S", 5.0)),
    "DEMO": env_bool("AUTOPLAY_DEMO", True),
    # Erasure (docs/erasure.md): how long an erased user's tombstone refuses late session ends;
    # each sink's deletion request: its timeout, first retry delay (doubled each time) and attempts.
    "ERASURE_TOMBSTONE_DAYS": float(os.environ.get("AUTOPLAY_ERASURE_TOMBSTONE_DAYS", 30)),
    "ERASURE_SINK_TIMEOUT_S": float(os.environ.get("AUTOPLAY_ERASURE_SINK_TIMEOUT_S", 10)),
    "ERASURE_RETRY_BASE_S": float(os.environ.get("AUTOPLAY_ERASURE_RETRY_BASE_S", 60)),
    "ERASURE_MAX_ATTEMPTS": int(os.environ.get("AUTOPLAY_ERASURE_MAX_ATTEMPTS", 8)),
    "ERASURE_RETRY_POLL_S": float(os.environ.get("AUTOPLAY_ERASURE_RETRY_POLL_S", 15)),
}

# /metrics (Prometheus text format) answers only to `Authorization: Bearer <this>`; unset: 404,
# and the server keeps no HTTP metrics (config.metrics).
AUTOPLAY_METRICS_TOKEN = os.environ.get("AUTOPLAY_METRICS_TOKEN", "")

# "json": one JSON object per log line, with the request id (config.logs); "plain": text lines.
AUTOPLAY_LOG_FORMAT = os.environ.get("AUTOPLAY_LOG_FORMAT", "plain").strip().lower() or "plain"
if AUTOPLAY_LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"AUTOPLAY_LOG_FORMAT must be plain or json, not {AUTOPLAY_LOG_FORMAT!r}")

LOGGING_CONFIG = "config.logs.configure"
LOGGING = logging_config(AUTOPLAY_LOG_FORMAT, os.environ.get("DJANGO_LOG_LEVEL", "INFO"))
