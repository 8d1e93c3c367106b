"""Users from htpasswd files written by the real ``htpasswd -B`` (apache2-utils)."""

from __future__ import annotations

import logging
from pathlib import Path

import bcrypt
import pytest

from mirror.security.htpasswd import Htpasswd, HtpasswdError, Verdict, parse_htpasswd
from tests.support.clock import ManualClock
from tests.support.htpasswd import write_htpasswd


@pytest.fixture
def bcrypt_costs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The cost of every hash bcrypt checks a password against, in order."""
    costs: list[int] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        costs.append(int(hashed[4:6]))
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return costs


async def test_entries_written_by_htpasswd_b_verify(tmp_path: Path) -> None:
    path = write_htpasswd(tmp_path / "users", ("alice", "wonderland"), ("bob", "p@ss:w0rd é"))
    assert path.read_text().startswith("alice:$2y$")
    users = Htpasswd(path)
    assert users.users == {"alice", "bob"}
    assert await users.verify("alice", "wonderland") is Verdict.OK
    assert await users.verify("bob", "p@ss:w0rd é") is Verdict.OK
    assert await users.verify("alice", "wonderland!") is Verdict.WRONG_PASSWORD
    assert await users.verify("carol", "wonderland") is Verdict.UNKNOWN_USER


async def test_passwords_longer_than_72_bytes_match_as_htpasswd_cut_them(tmp_path: Path) -> None:
    long = "x" * 72 + "tail"
    users = Htpasswd(write_htpasswd(tmp_path / "users", ("alice", long)))
    assert await users.verify("alice", long) is Verdict.OK
    # bcrypt reads 72 bytes; htpasswd cut the password there too, as does the check.
    assert await users.verify("alice", "x" * 72 + "other") is Verdict.OK
    assert await users.verify("alice", "x" * 71) is Verdict.WRONG_PASSWORD


async def test_an_unknown_user_costs_one_bcrypt_of_the_files_cost(
    tmp_path: Path, bcrypt_costs: list[int]
) -> None:
    path = write_htpasswd(
        tmp_path / "users", ("alice", "pw"), ("bob", "pw"), flags=("-B", "-C", "7")
    )
    write_htpasswd(path, ("carol", "pw"), flags=("-B", "-C", "6"))
    users = Htpasswd(path)
    assert await users.verify("mallory", "pw") is Verdict.UNKNOWN_USER
    assert await users.verify("alice", "wrong") is Verdict.WRONG_PASSWORD
    assert bcrypt_costs == [7, 7], "as slow as a known user with a wrong password"


async def test_a_checked_password_is_remembered_until_the_entry_changes(
    tmp_path: Path, bcrypt_costs: list[int]
) -> None:
    clock = ManualClock()
    path = write_htpasswd(tmp_path / "users", ("alice", "one"))
    users = Htpasswd(path, check_interval=1.0, remember=300.0, clock=clock)
    assert not users.known_good("alice", "one")
    assert await users.verify("alice", "one") is Verdict.OK
    assert users.known_good("alice", "one")
    assert not users.known_good("alice", "two")
    assert await users.verify("alice", "one") is Verdict.OK
    assert len(bcrypt_costs) == 1, "the second check ran no bcrypt"
    write_htpasswd(tmp_path / "users", ("alice", "two"))  # a new password
    clock.now += 1.5
    assert not users.known_good("alice", "one")
    assert await users.verify("alice", "one") is Verdict.WRONG_PASSWORD
    assert await users.verify("alice", "two") is Verdict.OK
    clock.now += 301
    assert not users.known_good("alice", "two"), "remembered for `remember` seconds only"


async def test_the_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    clock = ManualClock()
    path = write_htpasswd(tmp_path / "users", ("alice", "pw"))
    users = Htpasswd(path, check_interval=2.0, clock=clock)
    write_htpasswd(path, ("alice", "pw"), ("bob", "pw"))
    assert users.users == {"alice"}, "not looked at before check_interval"
    clock.now += 2.5
    assert await users.verify("bob", "pw") is Verdict.OK
    assert users.users == {"alice", "bob"}
    path.write_text(path.read_text().splitlines()[1] + "\n")  # bob's line only
    clock.now += 2.5
    users.reload_if_changed()
    assert users.users == {"bob"}, "alice was removed"


async def test_a_broken_file_keeps_the_users_read_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    path = write_htpasswd(tmp_path / "users", ("alice", "pw"))
    users = Htpasswd(path, check_interval=1.0, clock=clock)
    path.write_text(path.read_text() + "bob:$apr1$abcdefgh$0123456789abcdefghijkl\n")
    clock.now += 1.5
    with caplog.at_level(logging.ERROR, "mirror.security.htpasswd"):
        assert await users.verify("alice", "pw") is Verdict.OK
    assert "auth.htpasswd: line 2 (user 'bob'): only bcrypt entries" in caplog.text
    assert "0123456789" not in caplog.text
    path.unlink()
    clock.now += 1.5
    users.reload_if_changed()
    assert users.users == {"alice"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice\n", "line 1: expected USER:HASH"),
        (":$2y$05$" + "a" * 53 + "\n", "line 1: expected USER:HASH"),
        ("al\x01ce:$2y$05$" + "a" * 53 + "\n", "line 1: expected USER:HASH"),
        ("# comment\n\nalice:$2y$05$short\n", "line 3 (user 'alice'): only bcrypt entries"),
        (
            "a:$2y$05$" + "a" * 53 + "\na:$2b$05$" + "b" * 53 + "\n",
            "line 2: user 'a' appears twice",
        ),
    ],
)
def test_malformed_files(text: str, message: str) -> None:
    with pytest.raises(HtpasswdError) as caught:
        parse_htpasswd(text)
    assert str(caught.value).startswith(message)


def test_comments_blank_lines_and_every_bcrypt_prefix() -> None:
    entries = {p: f"{p}05$" + "a" * 53 for p in ("$2y$", "$2b$", "$2a$")}
    text = "# users\n\n" + "".join(f"u{i}:{e}\r\n" for i, e in enumerate(entries.values()))
    assert parse_htpasswd(text) == {f"u{i}": e.encode() for i, e in enumerate(entries.values())}
