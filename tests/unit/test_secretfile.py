"""Secrets from files and from the command line: checks, precedence and warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pktchain.errors import UsageError
from pktchain.secretfile import check_token, read_secret_file, secret_option

ENV, FILE_ENV = "PKTCHAIN_TEST_TOKEN", "PKTCHAIN_TEST_TOKEN_FILE"


def secret(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def token(value: str | None = None, file: str | None = None) -> str | None:
    return secret_option(
        value=value,
        file=file,
        option="--token",
        file_option="--token-file",
        env=ENV,
        file_env=FILE_ENV,
    )


def test_a_secret_file_loses_its_trailing_newline_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert read_secret_file(secret(tmp_path, b" s3cret \r\n"), "--key-file") == b" s3cret "
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("content", "message"), [(b"", "the file is empty"), (b"\n\n", "the file is empty")]
)
def test_an_empty_secret_file_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = secret(tmp_path, content)
    with pytest.raises(UsageError, match=f"--key-file {path}: {message}"):
        read_secret_file(path, "--key-file")


def test_an_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(UsageError, match=f"--key-file {missing}: No such file or directory"):
        read_secret_file(missing, "--key-file")
    with pytest.raises(UsageError, match="Is a directory"):
        read_secret_file(tmp_path, "--key-file")


def test_a_secret_file_others_may_read_is_taken_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = secret(tmp_path, b"s3cret", mode=0o644)
    assert read_secret_file(path, "--messenger-secret-file") == b"s3cret"
    err = capsys.readouterr().err
    assert f"--messenger-secret-file {path}: other users may read or change it" in err
    assert "mode 0644" in err and "chmod 600" in err


@pytest.mark.parametrize("bad", ["", "two words", "tab\there", "caf\u00e9", "line\n"])
def test_a_token_must_fit_in_a_header(bad: str) -> None:
    with pytest.raises(UsageError, match="printable ASCII"):
        check_token(bad, "--token")


def test_precedence_of_the_token_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv(FILE_ENV, raising=False)
    assert token() is None
    monkeypatch.setenv(ENV, "from-env")
    assert token() == "from-env"
    path = secret(tmp_path, b"from-file\n")
    monkeypatch.setenv(FILE_ENV, str(path))
    assert token() == "from-file"
    other = tmp_path / "other"
    other.write_bytes(b"from-option-file")
    other.chmod(0o600)
    assert token(file=str(other)) == "from-option-file"
    assert capsys.readouterr().err == ""
    assert token(value="on-the-line") == "on-the-line"
    warning = capsys.readouterr().err
    assert "--token on the command line can be read by every user" in warning
    assert f"--token-file FILE or ${ENV}" in warning
    with pytest.raises(UsageError, match="--token and --token-file exclude each other"):
        token(value="x", file=str(other))


def test_a_token_file_must_hold_a_header_value(tmp_path: Path) -> None:
    path = secret(tmp_path, "caf\u00e9".encode())
    with pytest.raises(UsageError, match="--token-file: a token is one or more printable"):
        token(file=str(path))
