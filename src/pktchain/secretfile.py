"""Secrets given to commands: read from files, or from the command line with a warning.

The REST API's token, the messenger's shared secret and the tunnel's key are
read from files (``--api-token-file``, ``--messenger-secret-file``,
``--key-file``), each checked the same way by `read_secret_file`: a file
that cannot be read, or is empty (a trailing newline is not part of the
secret), is refused with an error naming the option and the file; a file
other users may read or write is taken with a warning. A token may still be
given on the command line (``--api-token``, ``--token``), where every user
of the machine can read it in the process list (``ps``, ``/proc/PID/cmdline``),
so doing so is warned about; `secret_option` settles which of an option, its
file option and their environment variables gives the secret.

Warnings are logged (logger ``pktchain``) and, unless the log already goes
to standard error, printed there.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

from pktchain.errors import UsageError

__all__ = ["check_token", "read_secret_file", "secret_option", "warn"]

log = logging.getLogger("pktchain")


def warn(message: str) -> None:
    """Log `message` as a warning, and print it on stderr unless the log goes there."""
    log.warning(message)
    if not _logs_to_stderr():
        print(f"pktchain: warning: {message}", file=sys.stderr)


def _logs_to_stderr() -> bool:
    logger: logging.Logger | None = log
    while logger is not None:
        if logger.isEnabledFor(logging.WARNING) and any(
            isinstance(handler, logging.StreamHandler)
            and getattr(handler, "stream", None) is sys.stderr
            for handler in logger.handlers
        ):
            return True
        logger = logger.parent if logger.propagate else None
    return False


def read_secret_file(path: str | Path, option: str) -> bytes:
    """The secret held in `path`, without its trailing newline.

    UsageError naming `option` if the file cannot be read or holds nothing;
    a warning if users other than its owner may read or change it.
    """
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            secret = file.read()
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror}") from None
    secret = secret.rstrip(b"\r\n")
    if not secret:
        raise UsageError(f"{option} {path}: the file is empty")
    if stat.S_ISREG(mode) and mode & 0o077:
        warn(
            f"{option} {path}: other users may read or change it "
            f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    return secret


def check_token(token: str, option: str) -> str:
    """`token` if it can travel in an HTTP header (printable ASCII, no spaces)."""
    if not token or not all(0x21 <= ord(char) <= 0x7E for char in token):
        raise UsageError(
            f"{option}: a token is one or more printable ASCII characters without spaces "
            "(it is sent in the X-Auth-Token header)"
        )
    return token


def secret_option(
    *,
    value: str | None,
    file: str | None,
    option: str,
    file_option: str,
    env: str,
    file_env: str,
) -> str | None:
    """The token that the command line or the environment gives, or None.

    `value` (the option `option`, visible in the process list: warned about)
    and `file` (`file_option`) exclude each other; without either, the file
    named by the environment variable `file_env`, then the value of `env`.
    """
    if value is not None and file is not None:
        raise UsageError(f"{option} and {file_option} exclude each other")
    if file is not None:
        return _token_from_file(file, file_option)
    if value is not None:
        warn(
            f"{option} on the command line can be read by every user of this machine "
            f"(ps, /proc); give {file_option} FILE or ${env} instead"
        )
        return check_token(value, option)
    from_env = os.environ.get(file_env)
    if from_env:
        return _token_from_file(from_env, f"${file_env}")
    token = os.environ.get(env)
    return check_token(token, f"${env}") if token else None


def _token_from_file(path: str, option: str) -> str:
    raw = read_secret_file(path, option)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    return check_token(text, option)
