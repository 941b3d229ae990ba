import asyncio
import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from litellm_claude_oauth.crypto import Cipher
from litellm_claude_oauth.errors import DecryptionError, TokenStoreError
from litellm_claude_oauth.store.base import AccountRecord
from litellm_claude_oauth.store.file import FileTokenStore
from litellm_claude_oauth.tokens import PendingLogin, TokenSet

A, B = bytes.fromhex("a1" * 32), bytes.fromhex("b2" * 32)


def record(account: str = "default", n: int = 1) -> AccountRecord:
    tokens = TokenSet.from_token_response(
        {"access_token": f"sk-ant-oat01-acc{n}", "refresh_token": f"sk-ant-ort01-ref{n}", "expires_in": 3600}
    )
    return AccountRecord(account=account, tokens=tokens)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "dir" / "claude_tokens.json"


async def test_round_trip_multiple_accounts(path: Path) -> None:
    store = FileTokenStore(path, Cipher(A))
    await store.save(record("default", 1))
    await store.save(record("user_2", 2))
    loaded = await store.load("user_2")
    assert loaded is not None and loaded.tokens.access == "sk-ant-oat01-acc2"
    assert await store.accounts() == ["default", "user_2"]
    assert await store.delete("default") is True
    assert await store.delete("default") is False
    assert await store.load("default") is None


async def test_file_is_0600_encrypted_and_directory_private(path: Path) -> None:
    store = FileTokenStore(path, Cipher(A))
    await store.save(record())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    raw = path.read_text()
    assert "sk-ant" not in raw and "AES-256-GCM" in raw


async def test_reading_creates_nothing(path: Path) -> None:
    store = FileTokenStore(path, Cipher(A))
    assert await store.load("default") is None
    assert await store.accounts() == []
    assert not path.parent.exists()


async def test_wrong_key_is_clear_and_leaves_file_untouched(path: Path) -> None:
    await FileTokenStore(path, Cipher(A)).save(record())
    before = path.read_bytes()
    wrong = FileTokenStore(path, Cipher(B))
    with pytest.raises(DecryptionError, match="not configured"):
        await wrong.load("default")
    with pytest.raises(DecryptionError):
        await wrong.rotate_keys()
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b'{"some": "other file"}', b"[]"])
async def test_corrupt_file_is_reported_and_never_overwritten(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    store = FileTokenStore(path, Cipher(A))
    with pytest.raises(TokenStoreError, match="left untouched"):
        await store.load("default")
    with pytest.raises(TokenStoreError):
        await store.save(record())
    assert path.read_bytes() == content


async def test_failed_rename_keeps_old_file_and_no_temp_files(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileTokenStore(path, Cipher(A))
    await store.save(record(n=1))
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(TokenStoreError, match="No space left on device"):
        await store.save(record(n=2))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def _crash_during_save(path: Path, replace: str) -> subprocess.CompletedProcess:
    """A real process saves record(n=2) and dies (os._exit) where ``replace`` says."""
    script = textwrap.dedent(
        f"""
        import asyncio, os
        from litellm_claude_oauth.crypto import Cipher
        from litellm_claude_oauth.store.file import FileTokenStore
        from tests.test_store_file import record
        {replace}
        asyncio.run(FileTokenStore({str(path)!r}, Cipher(bytes.fromhex("a1" * 32))).save(record(n=2)))
        """
    )
    return subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent.parent)


def tmp_files(path: Path) -> list[Path]:
    return [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_crash_between_temp_write_and_rename_is_rolled_forward(path: Path) -> None:
    """The dead writer's complete temp file (maybe a freshly rotated refresh token) is not lost."""
    asyncio.run(FileTokenStore(path, Cipher(A)).save(record(n=1)))
    assert _crash_during_save(path, "os.replace = lambda src, dst: os._exit(9)").returncode == 9
    assert tmp_files(path), "the crash should have happened after the temp file was written"
    assert asyncio.run(FileTokenStore(path, Cipher(A)).load("default")).tokens.access == "sk-ant-oat01-acc2"
    assert tmp_files(path) == []


def test_crash_in_the_middle_of_the_temp_write_keeps_the_old_file(path: Path) -> None:
    asyncio.run(FileTokenStore(path, Cipher(A)).save(record(n=1)))
    # Die after half of the bytes reached the temp file.
    crash = """
_fdopen = os.fdopen
class HalfThenDie:
    def __init__(self, fh): self.fh = fh
    def __enter__(self): return self
    def __exit__(self, *exc): return False
    def write(self, data): self.fh.write(data[: len(data) // 2]); self.fh.flush(); os._exit(9)
os.fdopen = lambda fd, mode: HalfThenDie(_fdopen(fd, mode))
"""
    assert _crash_during_save(path, crash.replace("\n", "\n        ")).returncode == 9
    assert tmp_files(path)
    assert asyncio.run(FileTokenStore(path, Cipher(A)).load("default")).tokens.access == "sk-ant-oat01-acc1"
    assert tmp_files(path) == []  # the partial temp file, with its secrets, is gone


def test_orphan_older_than_the_file_is_discarded(path: Path) -> None:
    store = FileTokenStore(path, Cipher(A))
    asyncio.run(store.save(record(n=1)))
    orphan = path.parent / f".{path.name}.stale123.tmp"  # mkstemp's shape: 8 random characters
    orphan.write_bytes(path.read_bytes())
    os.utime(orphan, ns=(1, 1))  # written long before the current file
    asyncio.run(store.save(record(n=3)))
    assert not orphan.exists()
    assert asyncio.run(store.load("default")).tokens.access == "sk-ant-oat01-acc3"


def test_another_stores_temp_file_in_the_same_directory_is_left_alone(path: Path) -> None:
    """Audit L2: `claude_tokens.json.staging` writes `.claude_tokens.json.staging.XXXXXXXX.tmp` beside us."""
    store = FileTokenStore(path, Cipher(A))
    asyncio.run(store.save(record(n=1)))
    staging = FileTokenStore(path.with_name(path.name + ".staging"), Cipher(A))
    asyncio.run(staging.save(record("staging-only", 2)))
    theirs = path.parent / f".{path.name}.staging.abcd1234.tmp"
    theirs.write_bytes(staging.path.read_bytes())
    asyncio.run(store.save(record(n=3)))
    assert theirs.exists(), "another store's in-flight temp file was deleted"
    assert asyncio.run(store.accounts()) == ["default"]
    assert asyncio.run(store.load("default")).tokens.access == "sk-ant-oat01-acc3"


@pytest.mark.parametrize("errno_, message", [(28, "No space left on device"), (13, "Permission denied"), (5, "Input/output error")])
async def test_any_os_error_while_writing_is_a_token_store_error(
    path: Path, monkeypatch: pytest.MonkeyPatch, errno_: int, message: str
) -> None:
    """Audit H2: the manager keeps a rotated token in memory only on TokenStoreError."""
    store = FileTokenStore(path, Cipher(A))
    await store.save(record(n=1))

    def broken_mkstemp(*args: object, **kwargs: object) -> None:
        raise OSError(errno_, message)

    monkeypatch.setattr(tempfile, "mkstemp", broken_mkstemp)
    with pytest.raises(TokenStoreError, match=message):
        await store.update("default", lambda current: record(n=2))
    monkeypatch.undo()
    assert (await store.load("default")).tokens.access == "sk-ant-oat01-acc1"


def test_a_token_path_under_a_regular_file_is_one_clear_error(tmp_path: Path) -> None:
    """Audit L7: filelock's mkdir used to raise a raw FileExistsError."""
    (tmp_path / "not-a-dir").write_text("x")
    store = FileTokenStore(tmp_path / "not-a-dir" / "tokens.json", Cipher(A))
    with pytest.raises(TokenStoreError):
        asyncio.run(store.save(record()))


async def test_update_is_read_modify_write_of_the_current_record(path: Path) -> None:
    store = FileTokenStore(path, Cipher(A))
    assert await store.update("default", lambda current: current) is None  # nothing there, nothing written
    assert not path.exists()
    await store.save(record(n=1))
    stamp = path.stat().st_mtime_ns
    same = await store.update("default", lambda current: current)
    assert same is not None and path.stat().st_mtime_ns == stamp  # unchanged: not rewritten
    cooled = await store.update("default", lambda current: current.model_copy(update={"cooldown_until": 5.0}))
    assert cooled is not None and cooled.cooldown_until == 5.0
    assert (await store.load("default")).tokens.access == "sk-ant-oat01-acc1"
    assert await store.update("default", lambda current: None) is None
    assert await store.load("default") is None

    def refuse(current: object) -> object:
        raise RuntimeError("abort")

    await store.save(record(n=2))
    with pytest.raises(RuntimeError):
        await store.update("default", refuse)
    assert (await store.load("default")).tokens.access == "sk-ant-oat01-acc2"


async def test_key_rotation_reseals_lazily_and_in_bulk(path: Path) -> None:
    old = FileTokenStore(path, Cipher(A))
    await old.save(record("default", 1))
    await old.save(record("other", 2))
    rotated = FileTokenStore(path, Cipher(B, (A,)))
    loaded = await rotated.load("default")
    assert loaded is not None and loaded.tokens.access == "sk-ant-oat01-acc1"
    doc = json.loads(path.read_text())
    assert doc["accounts"]["default"]["kid"] != doc["accounts"]["other"]["kid"]  # lazily re-sealed one
    assert await rotated.rotate_keys() == 1
    only_new = FileTokenStore(path, Cipher(B))
    assert (await only_new.load("other")) is not None and (await only_new.load("default")) is not None


async def test_unencrypted_store_upgrades_when_key_is_set_with_the_migration_flag(path: Path) -> None:
    await FileTokenStore(path, Cipher(None)).save(record())
    assert "sk-ant-oat01-acc1" in path.read_text()
    # Audit M3: without the flag a plaintext record is refused once a key is set (it may be planted).
    with pytest.raises(DecryptionError):
        await FileTokenStore(path, Cipher(A)).rotate_keys()
    assert "sk-ant-oat01-acc1" in path.read_text()  # refused, and nothing rewritten
    assert await FileTokenStore(path, Cipher(A, allow_plaintext=True)).rotate_keys() == 1
    assert "sk-ant" not in path.read_text()


async def test_pending_login_is_single_use(path: Path) -> None:
    store = FileTokenStore(path, Cipher(A))
    pending = PendingLogin(state="s1", code_verifier="v" * 43, account="default", redirect_uri="http://cb")
    await store.put_pending(pending)
    assert "v" * 43 not in path.read_text()
    assert [p.state for p in await store.pending_for("default")] == ["s1"]
    assert await store.pending_for("other") == []
    taken = await store.take_pending("s1")
    assert taken is not None and taken.code_verifier.get_secret_value() == "v" * 43
    assert await store.take_pending("s1") is None


async def test_prune_drops_only_stale_pending(path: Path) -> None:
    store = FileTokenStore(path, Cipher(A))
    await store.put_pending(PendingLogin(state="old", code_verifier="v" * 43, account="a", redirect_uri="x", created_at=1))
    await store.put_pending(PendingLogin(state="new", code_verifier="v" * 43, account="a", redirect_uri="x"))
    assert await store.prune_pending(older_than=1000) == 1
    assert [p.state for p in await store.pending_for("a")] == ["new"]


def _writer(path: str, account: str, rounds: int) -> None:
    async def go() -> None:
        store = FileTokenStore(Path(path), Cipher(A))
        for n in range(rounds):
            await store.save(record(account, n))

    asyncio.run(go())


def test_concurrent_processes_never_lose_an_update(path: Path) -> None:
    """Four processes doing read-modify-write on one file: the file lock keeps every account."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), f"acct{i}", 15)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = FileTokenStore(path, Cipher(A))
    assert asyncio.run(store.accounts()) == [f"acct{i}" for i in range(4)]
    for i in range(4):
        loaded = asyncio.run(store.load(f"acct{i}"))
        assert loaded is not None and loaded.tokens.access == "sk-ant-oat01-acc14"


async def test_refresh_lock_excludes_a_second_store(path: Path) -> None:
    first, second = FileTokenStore(path, Cipher(A)), FileTokenStore(path, Cipher(A), lock_timeout=0.2)
    async with first.lock("default"):
        with pytest.raises(TokenStoreError, match="refresh lock"):
            async with second.lock("default"):
                pass
        async with second.lock("other-account"):
            pass
    async with second.lock("default"):
        pass
