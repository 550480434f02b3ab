"""Operator safety (issue 24, item 5): a weak admin token is refused, the admin throttle never
refuses the right token and sees clients through trusted proxies, `copy` is all or nothing,
and a secret key rotation writes the new key down first and refuses while a node serves."""

from __future__ import annotations

import pytest

from collector.cli import main
from collector.settings import SettingsError, load_settings


@pytest.mark.parametrize("token", ["abc", "sea_" + "a" * 40, "0123456789" * 4, "short_but_varied_9X!"])
def test_a_weak_admin_token_is_refused_with_what_makes_a_good_one(token, tmp_path, monkeypatch, capsys):
    with pytest.raises(SettingsError, match=r"SIGNAL_ADMIN_TOKEN: too weak .* at least 32 random characters"):
        load_settings({}, environ={"SIGNAL_ADMIN_TOKEN": token})
    monkeypatch.setenv("SIGNAL_ADMIN_TOKEN", token)
    assert main(["serve", "--db", str(tmp_path / "weak.db")]) == 2
    said = capsys.readouterr().err.strip()
    assert said.count("\n") == 0 and "openssl rand -base64 32" in said and "leave it unset" in said
    assert not (tmp_path / "weak.db").exists()  # refused before anything was created


def test_a_random_admin_token_is_taken():
    for token in ("sea_test_admin_token_0123456789abcdef", "Yq3v0Zb9kP2mXw7sT1rN5aJ8cL4dF6gH0eU2iO9p"):
        assert load_settings({}, environ={"SIGNAL_ADMIN_TOKEN": token}).admin_token == token
