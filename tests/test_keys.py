import json
import os
import stat

import numpy as np
import pytest

from faceveil.errors import KeyFileError, UsageError
from faceveil.keys import InvalidTag, Key, new_nonce, public_gaussian

FAST_ARGON2 = {"memory_kib": 1024, "iterations": 1, "lanes": 1}


def test_key_file_round_trip_mode_and_no_overwrite(tmp_path):
    key = Key.generate()
    path = key.save(tmp_path / "k.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Key.load(path).secret == key.secret
    record = json.loads(path.read_text())
    assert record["format"] == "faceveil-key" and record["version"] == 1
    with pytest.raises(UsageError, match="already exists"):
        Key.generate().save(path)
    assert Key.load(path).secret == key.secret  # untouched


def test_repr_hides_secret():
    key = Key.generate()
    assert key.secret.hex() not in repr(key) and key.fingerprint in repr(key)


def test_passphrase_round_trip_and_wrong_passphrase(tmp_path):
    key = Key.generate()
    path = key.save(tmp_path / "p.key", passphrase="correct horse", argon2=FAST_ARGON2)
    assert key.secret.hex() not in path.read_text()
    assert Key.file_needs_passphrase(path)
    assert Key.load(path, passphrase="correct horse").secret == key.secret
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        Key.load(path, passphrase="wrong")
    with pytest.raises(KeyFileError, match="passphrase"):
        Key.load(path)


def test_passphrase_from_environment(tmp_path, monkeypatch):
    key = Key.generate()
    path = key.save(tmp_path / "p.key", passphrase="s3cret", argon2=FAST_ARGON2)
    monkeypatch.setenv("FACEVEIL_PASSPHRASE", "s3cret")
    assert Key.load(path).secret == key.secret


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\xff garbage", b"{not json", b'{"format": "other"}', b'{"format": "faceveil-key", "version": 1}',
     b'{"format": "faceveil-key", "version": 1, "protection": "none", "secret": "!!"}',
     b'{"format": "faceveil-key", "version": 1, "protection": "none", "secret": "AAAA"}',
     b'{"format": "faceveil-key", "version": 9, "protection": "none", "secret": "AAAA"}'],
)
def test_corrupt_key_files_fail_cleanly(tmp_path, content):
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError):
        Key.load(path)


def test_altered_secret_detected_by_fingerprint(tmp_path):
    path = Key.generate().save(tmp_path / "k.key")
    record = json.loads(path.read_text())
    record["secret"] = Key.generate().to_file_bytes().decode().split('"secret": "')[1].split('"')[0]
    path.write_text(json.dumps(record))
    with pytest.raises(KeyFileError, match="fingerprint"):
        Key.load(path)


def test_missing_key_file(tmp_path):
    with pytest.raises(KeyFileError, match="does not exist"):
        Key.load(tmp_path / "nope.key")


def test_sign_pattern_is_keyed_nonced_and_balanced():
    key, other = Key.generate(), Key.generate()
    nonce = new_nonce()
    shape = (1, 3, 64, 64)
    s = key.sign_pattern(nonce, shape)
    assert s.shape == shape and set(np.unique(s)) == {-1.0, 1.0}
    assert np.array_equal(s, key.sign_pattern(nonce, shape))  # deterministic
    assert abs(s.mean()) < 0.03  # 12288 fair coins: std of the mean is 0.009
    for different in (key.sign_pattern(new_nonce(), shape), other.sign_pattern(nonce, shape)):
        agree = (different == s).mean()
        assert 0.45 < agree < 0.55  # independent patterns agree on half the signs


def test_check_tag_and_seal_bind_the_key():
    key, other = Key.generate(), Key.generate()
    nonce = new_nonce()
    assert key.check_tag(nonce) != other.check_tag(nonce)
    assert key.check_tag(nonce) != key.check_tag(new_nonce())
    sealed = key.seal(b"\x00" * 12, b"face mask", b"aad")
    assert key.open(b"\x00" * 12, sealed, b"aad") == b"face mask"
    with pytest.raises(InvalidTag):
        other.open(b"\x00" * 12, sealed, b"aad")


def test_public_gaussian_is_deterministic_and_standard():
    a = public_gaussian(b"seed", (4, 64, 64))
    assert np.array_equal(a, public_gaussian(b"seed", (4, 64, 64)))
    assert not np.array_equal(a, public_gaussian(b"other", (4, 64, 64)))
    assert abs(a.mean()) < 0.05 and abs(a.std() - 1) < 0.05


def test_pairing_is_a_keyed_involution_inside_the_mask():
    key, nonce = Key.generate(), new_nonce()
    shape = (1, 3, 16, 16)
    inside = np.zeros(shape, bool)
    inside[..., 4:12, 4:12] = True
    p = key.pairing(nonce, shape, inside)
    flat = inside.reshape(-1)
    assert np.array_equal(p[p], np.arange(p.size))  # an involution
    assert np.array_equal(p[~flat], np.flatnonzero(~flat))  # outside: fixed
    assert np.all(flat[p[flat]]) and (p[flat] != np.flatnonzero(flat)).all()  # inside: paired inside (even count)
    assert np.array_equal(p, key.pairing(nonce, shape, inside))
    assert not np.array_equal(p, Key.generate().pairing(nonce, shape, inside))
    assert not np.array_equal(p, key.pairing(new_nonce(), shape, inside))


@pytest.mark.parametrize("change", [
    {"memory_kib": 1 << 30},  # 1 TiB of Argon2 memory: refused before any work
    {"iterations": 10**9},
    {"lanes": 0},
    {"memory_kib": "65536"},
    {"iterations": True},
    {"name": "scrypt"},
])
def test_hostile_argon2_parameters_are_refused_before_work(tmp_path, change):
    record = json.loads(Key.generate().to_file_bytes("pw"))
    record["kdf"].update(change)
    path = tmp_path / "hostile.key"
    path.write_text(json.dumps(record))
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError):
        Key.load(path, passphrase="pw")


def test_oversized_and_deeply_nested_key_files_are_not_key_files(tmp_path):
    big = tmp_path / "big.key"
    big.write_bytes(b" " * (1 << 20) + Key.generate().to_file_bytes())
    deep = tmp_path / "deep.key"
    deep.write_bytes(b"[" * 50_000 + b"]" * 50_000)
    for path in (big, deep, tmp_path):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
        with pytest.raises(KeyFileError):
            Key.load(path)
        assert Key.file_needs_passphrase(path) is False


def test_a_key_file_others_can_read_warns(tmp_path):
    key = Key.generate()
    path = key.save(tmp_path / "k.key")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Key.load(path) == key  # 0600: no warning
    os.chmod(path, 0o644)
    from faceveil.keys import KeyFileWarning

    with pytest.warns(KeyFileWarning, match="chmod 600"):
        assert Key.load(path) == key


def test_made_tells_the_key_that_made_a_record():
    from faceveil.container import seal_header

    key, other = Key.generate(), Key.generate()
    record = seal_header(key, {"faces": []}, {})
    assert key.made(record) and not other.made(record)
    assert not key.made({"check": "!!", "file_nonce": 3})
    # two files of one key carry unrelated tags: nothing links them without the key
    assert seal_header(key, {}, {})["check"] != record["check"]
