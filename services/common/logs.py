"""Log lines a machine can read: one JSON object per line, or the familiar text line, never a secret.

`Formatter` is the formatter of every service's `LOGGING` block (config/*.yml). It writes JSON when
`LOG_FORMAT=json` and text when `LOG_FORMAT=console` (the default), so one config serves a terminal and a log
collector. A JSON line carries `time`, `level`, `service`, `request_id`, `entrypoint`, `message`, `logger`, the
record's extras (`duration` and `outcome` on the line that ends a worker), and `exc_info` when there is one.
`service`, `request_id` and `entrypoint` come from the worker the line was logged in (see `bind_worker`), so no
caller has to pass them.

Every line goes through `redact` on its way out: card-number-like digit runs keep only their last four digits,
bearer tokens and JWTs are masked, and so is the value of any key that names a password, token, secret,
authorization or card number. `RedactingFilter` does the same for handlers that use another formatter.
"""

import logging
import os
import re
from datetime import UTC, datetime

import eventlet
from eventlet.corolocal import local
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from services.common.context import current_request_id

LOG_FORMAT_ENV = "LOG_FORMAT"
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s [request_id=%(request_id)s] %(message)s"
MASK = "[REDACTED]"

# --- redaction ---------------------------------------------------------------------------------------------

# Keys whose value is a secret wherever they appear (substring, any case): `access_token`, `JWT_SECRET`, ...
SENSITIVE_KEY = re.compile(r"passw(?:or)?d|secret|token|authorization|card_?number", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# `password=...` anywhere, and `"password": ...` / `'password': ...` as in JSON and dict reprs. A bare
# `password: too short` (a validation message) is left alone: it names the field, not its value.
_KEY_VALUE = re.compile(
    r"""(?P<key>[\w-]*(?:passw(?:or)?d|secret|token|authorization|card_?number)[\w-]*)"""
    r"""(?P<sep>\s*=\s*["']?|["']\s*:\s*["']?)(?P<value>[^\s"',;&}\]]+)""",
    re.IGNORECASE,
)
# Every key _KEY_VALUE can match contains one of these (lower case): its alternatives spelled out.
_KEY_WORDS = ("password", "passwd", "secret", "token", "authorization", "cardnumber", "card_number")
# 12 to 19 digits, optionally grouped by single spaces or dashes, standing alone: not inside a word, a hex id,
# or a dash-joined id such as a UUID's last group.
_PAN = re.compile(r"(?<![A-Za-z0-9-])(?:\d[ -]?){11,18}\d(?![A-Za-z0-9-])")


def _mask_pan(match):
    digits = re.sub(r"\D", "", match.group(0))
    return "*" * (len(digits) - 4) + digits[-4:]


def redact_text(text):
    """`text` with card numbers (all but the last four digits), bearer tokens, JWTs and `key=value` secrets
    masked."""
    if not text:
        return text
    # Each pattern tries a match at every position (_KEY_VALUE about 45 µs for an ordinary line, the others 2 µs
    # each): run one only when the text holds a word every one of its matches holds.
    if "eyJ" in text:
        text = _JWT.sub(MASK, text)
    lowered = text.lower()
    if "bearer" in lowered:
        text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
        lowered = text.lower()
    if any(word in lowered for word in _KEY_WORDS):
        text = _KEY_VALUE.sub(lambda m: f"{m.group('key')}{m.group('sep')}{MASK}", text)
    return _PAN.sub(_mask_pan, text)


def redact(value, key=None):
    """`value` with every secret masked: strings through `redact_text`, mappings and sequences item by item,
    and the whole value of a sensitive key (see `SENSITIVE_KEY`)."""
    if key is not None and isinstance(key, str) and SENSITIVE_KEY.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [redact(item) for item in value]
    return value


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message and extras, for handlers whose formatter is not `Formatter`."""

    def filter(self, record):
        record.msg = redact_text(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, redact(value, key))
        return True


_STANDARD_ATTRS = set(RESERVED_ATTRS) | {"message", "asctime"}

# --- the worker a line belongs to --------------------------------------------------------------------------

# Each nameko worker runs in its own greenthread: a greenthread-local holds what it is working on, as one
# tuple (service, entrypoint, request_id, trace_id): every attribute read of an eventlet local costs a few µs,
# and every log line reads it.
_worker = local()
_UNBOUND = (None, None, None, None)
# The services set up in this process: the `service` of lines logged outside any worker.
_process_services = []


def register_service(name):
    """Note that this process runs `name` (lines logged outside a worker name the process's services)."""
    if name not in _process_services:
        _process_services.append(name)


def process_service():
    return os.environ.get("SERVICE_NAME") or ",".join(_process_services) or "-"


def bind_worker(service, entrypoint, request_id=None, trace_id=None):
    """From now on, lines logged in this greenthread belong to `service`'s worker for `entrypoint`."""
    _worker.bound = (service, entrypoint, request_id, trace_id)


def unbind_worker():
    _worker.bound = _UNBOUND


def _bound():
    return getattr(_worker, "bound", None) or _UNBOUND


def worker_request_id():
    """The request id of the worker running in this greenthread, or None."""
    return current_request_id() or _bound()[2]


def worker_fields():
    """{service, request_id, entrypoint[, trace_id]} of the worker running in this greenthread."""
    service, entrypoint, request_id, trace_id = _bound()
    fields = {
        "service": service or process_service(),
        "request_id": current_request_id() or request_id,
        "entrypoint": entrypoint,
    }
    if trace_id:
        fields["trace_id"] = trace_id
    return fields


# --- formatters ----------------------------------------------------------------------------------------------


def iso_time(created):
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: the fields of the module docstring first, then the record's extras."""

    def add_fields(self, log_data, record, message_dict):
        log_data["time"] = iso_time(record.created)
        log_data["level"] = record.levelname
        log_data.update(worker_fields())
        for key in ("duration", "outcome"):
            if key in vars(record):
                log_data[key] = vars(record)[key]
        log_data["message"] = record.message
        log_data["logger"] = record.name
        for key, value in vars(record).items():
            # request_id: RequestIdFilter puts "-" there; the worker's own value is already in.
            if key not in _STANDARD_ATTRS and key not in log_data and key != "request_id" and not key.startswith("_"):
                log_data[key] = value
        log_data.update(message_dict)  # exc_info, stack_info

    def process_log_record(self, log_data):
        return {
            key: value if key in ("time", "level", "logger") else redact(_plain(value), key)
            for key, value in log_data.items()
        }


def _plain(value):
    """`value` as JSON values only: any other object becomes its text, so that redaction sees what is logged."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class ConsoleFormatter(logging.Formatter):
    """The text line (`CONSOLE_FORMAT` unless given one), `request_id` filled in, secrets masked."""

    def __init__(self, fmt=None, datefmt=None, style="%", validate=True, **kwargs):
        super().__init__(fmt or CONSOLE_FORMAT, datefmt, style, validate, **kwargs)

    def format(self, record):
        if not isinstance(getattr(record, "request_id", None), str) or record.request_id == "-":
            record.request_id = worker_request_id() or "-"
        return redact_text(super().format(record))


def choose_log_format(value=None):
    """'json' or 'console': `value` if given, else the `LOG_FORMAT` environment variable; anything else is
    refused, so a typo does not silently change the format."""
    chosen = (value or os.environ.get(LOG_FORMAT_ENV) or "console").strip().lower()
    if chosen not in ("json", "console"):
        raise ValueError(f"LOG_FORMAT must be 'json' or 'console', not {chosen!r}")
    return chosen


class Formatter(logging.Formatter):
    """The formatter to name in a `LOGGING` block: JSON or console text by `LOG_FORMAT` (or `log_format=`).

        formatters:
          default: {class: services.common.logs.Formatter}
          # or: {(): services.common.logs.Formatter, log_format: json}

    A `format` given in the config is used by the console format only.

    Neither format names a thread, so making one turns off `logging.logThreads` for the process: every
    `LogRecord` would otherwise ask eventlet's green `current_thread()` for its name, about 5 µs of the 8 µs a
    record costs to make.
    """

    def __init__(self, fmt=None, datefmt=None, style="%", validate=True, *, defaults=None, log_format=None):
        super().__init__(fmt, datefmt, style, validate)
        logging.logThreads = False
        self.log_format = choose_log_format(log_format)
        if self.log_format == "json":
            self.inner = JsonFormatter()
        else:
            self.inner = ConsoleFormatter(fmt, datefmt, style, validate, defaults=defaults)

    def format(self, record):
        return self.inner.format(record)


class BatchingStreamHandler(logging.StreamHandler):
    """`logging.StreamHandler` (stderr by default) that writes its lines in batches: lines below WARNING wait up to
    `FLUSH_SECONDS` (0.1) and leave together in one write; a WARNING or worse leaves at once, with what waited
    before it. stderr is line-buffered, so the standard handler made a system call of every line (on a busy
    service, several per request); the reader of a pipe (`make run`'s supervisor, a container runtime) then woke
    for each one too.

    The wait needs eventlet's hub (every `nameko run` process monkey-patches); in a process without it, every
    line is written at once. At a clean exit `logging.shutdown` writes what waits; a process killed with SIGKILL
    loses at most the last 0.1 s of INFO lines.
    """

    FLUSH_SECONDS = 0.1
    MAX_WAITING = 1000  # lines: written at once beyond this, whatever the clock says

    def __init__(self, stream=None):
        super().__init__(stream)
        self.waiting = []
        self.scheduled = False
        self.batching = eventlet.patcher.is_monkey_patched("thread")

    def emit(self, record):
        try:
            self.waiting.append(self.format(record) + self.terminator)
            if not self.batching or record.levelno >= logging.WARNING or len(self.waiting) >= self.MAX_WAITING:
                self.flush()
            elif not self.scheduled:
                self.scheduled = True
                eventlet.spawn_after(self.FLUSH_SECONDS, self.flush)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self):
        with self.lock:
            self.scheduled = False
            if self.waiting:
                lines, self.waiting = "".join(self.waiting), []
                self.stream.write(lines)
            super().flush()


def logging_config(level="INFO", log_format=None):
    """A `logging.config.dictConfig` mapping: everything to stderr through `Formatter`."""
    formatter = {"()": Formatter}
    if log_format:
        formatter["log_format"] = log_format
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"console": {"class": "services.common.logs.BatchingStreamHandler", "formatter": "default"}},
        "root": {"level": level, "handlers": ["console"]},
    }


# --- the line that ends a worker -------------------------------------------------------------------------

worker_log = logging.getLogger("cartmesh.worker")


def log_worker_end(kind, service, entrypoint, duration, outcome, detail=None):
    """The one line per finished worker; `detail` (an HTTP worker's `GET /path 200`) goes after its name.
    Successful timer runs (a sweep every second) go to DEBUG, so the log is not a clock; everything else is
    INFO."""
    level = logging.DEBUG if kind == "timer" and outcome == "success" else logging.INFO
    if worker_log.isEnabledFor(level):
        worker_log.log(
            level,
            "%s %s.%s %s%s in %.1f ms",
            kind,
            service,
            entrypoint,
            f"{detail} " if detail else "",
            outcome,
            duration * 1000,
            extra={"kind": kind, "duration": round(duration, 6), "outcome": outcome},
        )
