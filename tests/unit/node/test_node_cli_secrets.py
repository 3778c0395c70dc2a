"""`pktchain node` and `pktchain api serve`: the API's token from a file or the command
line, the limits' options, each mistake one line with exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from pktchain.cli import main


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PKTCHAIN_API_TOKEN", "PKTCHAIN_API_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


# No ports: the node stops after reading its options, before it makes anything.
NODE = ["node", "--no-state", "--no-api"]
SERVE = ["api", "serve", "--etcd", "http://127.0.0.1:9"]


@pytest.mark.parametrize("command", [NODE, SERVE], ids=["node", "api serve"])
def test_a_token_on_the_command_line_is_warned_about(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    main([*command, "--api-token", "visible", "--api-max-body", "0"])
    err = capsys.readouterr().err
    assert "--api-token on the command line can be read by every user of this machine" in err
    assert "give --api-token-file FILE or $PKTCHAIN_API_TOKEN instead" in err


@pytest.mark.parametrize("command", [NODE, SERVE], ids=["node", "api serve"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--api-token-file", "{missing}"], "--api-token-file {missing}: No such file"),
        (["--api-token-file", "{empty}"], "--api-token-file {empty}: the file is empty"),
        (["--api-token-file", "{token}", "--api-token", "t"], "exclude each other"),
        (["--api-max-body", "0"], "--api-max-body 0: must be at least 1"),
        (["--api-request-timeout", "0"], "--api-request-timeout 0: must be in (0, 3600]"),
        (["--api-max-connections", "0"], "--api-max-connections 0: must be at least 1"),
    ],
)
def test_bad_token_files_and_limits_are_refused(
    command: list[str],
    options: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "token": tmp_path / "t"}
    paths["empty"].write_bytes(b"\n")
    paths["token"].write_bytes(b"t0ken")
    for path in (paths["empty"], paths["token"]):
        path.chmod(0o600)
    argv = [option.format(**paths) for option in options]
    assert main([*command, *argv]) == 2
    err = capsys.readouterr().err
    assert message.format(**paths) in err
    assert err.count("\n") == 1


def test_the_messenger_limits_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    for option, value, message in (
        ("--messenger-handshake-timeout", "0", "must be in (0, 3600] seconds"),
        ("--messenger-max-connections", "0", "must be at least 1"),
    ):
        assert main([*NODE, "--router", "missing.yaml", option, value]) == 2
        assert f"{option} {value}: {message}" in capsys.readouterr().err
