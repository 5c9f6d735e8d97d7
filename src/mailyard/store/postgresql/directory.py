"""The directory on PostgreSQL: domains, accounts, quotas, sender grants,
webmail sessions, account settings, aliases and lists.

These are the names mail is addressed to (the router reads them through the
Store API) and the credentials sessions log in with, as in the SQLite store
(store/sqlite/directory.py). Its writes move ``directory_version`` on every
node (a DIRECTORY note); those that end sessions (a password change, an
account removed) send a REVOKE note too, and the writes of account settings
a SETTINGS note (``settings_version``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import psycopg

from ..api import (
    KEEP,
    SPECIAL_USE_MAILBOXES,
    Account,
    AlreadyExists,
    InvalidName,
    NotFound,
    Quota,
    StoreError,
    WebSession,
)
from ..names import alias_source, normalize_address, normalize_domain, normalize_sender_pattern
from ..rows import QUOTA_COLS, merged_list, quota_row
from .core import SETTINGS, PostgreSQLCore
from .transaction import (
    _all,
    _domain_alias_target,
    _drop_mailbox_messages,
    _insert_mailbox,
    _one,
    _Tx,
)

_ACCOUNT_COLS = "id, address, password_hash, apop_secret, scram_sha256, epoch"


class DirectoryMixin(PostgreSQLCore):
    """Domains, accounts, quotas, sender grants, webmail sessions, settings, aliases, lists."""

    # --- domains -----------------------------------------------------------------
    async def add_domain(self, name: str) -> None:
        domain = normalize_domain(name)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if await _one(c, "SELECT 1 FROM domains WHERE name = %s", (domain,)):
                raise AlreadyExists(f"domain {domain} exists already")
            await c.execute("INSERT INTO domains(name) VALUES (%s)", (domain,))

        await self._write(op, directory=True)

    async def remove_domain(self, name: str) -> None:
        domain = normalize_domain(name)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if not await _one(c, "SELECT 1 FROM domains WHERE name = %s", (domain,)):
                raise NotFound(f"no domain {domain}")
            target = await _domain_alias_target(c, domain)
            if target is not None:
                raise StoreError(f"{domain} is an alias of {target}; remove it with: "
                                 f"mailyard domain alias remove {domain}")
            aliased = [r[0][1:] for r in await _all(
                c, "SELECT source FROM aliases WHERE lower(target) = %s ORDER BY source", ("@" + domain,))]
            if aliased:
                raise StoreError(f"domain {domain} is the target of the domain alias(es) {', '.join(aliased)}; "
                                 "remove them first")
            like = "%@" + domain
            used = (await _one(c, "SELECT count(*) FROM accounts WHERE domain = %s", (domain,)))[0]
            used += (await _one(c, "SELECT count(*) FROM aliases WHERE lower(source) LIKE %s", (like,)))[0]
            used += (await _one(c, "SELECT count(*) FROM lists WHERE lower(address) LIKE %s", (like,)))[0]
            if used:
                raise StoreError(
                    f"domain {domain} still has {used} account(s), alias(es) or list(s); remove them first")
            await c.execute("DELETE FROM domains WHERE name = %s", (domain,))

        await self._write(op, directory=True)

    async def list_domains(self) -> list[str]:
        return [r[0] for r in await self._q('SELECT name FROM domains ORDER BY name COLLATE "C"')]

    async def is_local_domain(self, name: str) -> bool:
        try:
            domain = normalize_domain(name)
        except InvalidName:
            return False
        return await self._q1("SELECT 1 FROM domains WHERE name = %s", (domain,)) is not None

    # --- accounts ----------------------------------------------------------------
    async def add_account(self, address: str, password_hash: str, apop_secret: str | None = None,
                          scram_sha256: str | None = None) -> Account:
        addr = normalize_address(address)
        domain = addr.rpartition("@")[2]

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            if not await _one(c, "SELECT 1 FROM domains WHERE name = %s", (domain,)):
                raise NotFound(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
            target = await _domain_alias_target(c, domain)
            if target is not None:
                raise StoreError(f"{domain} is an alias of {target}; add the account there")
            if await _one(c, "SELECT 1 FROM aliases WHERE lower(source) = lower(%s)", (addr,)) or await _one(
                    c, "SELECT 1 FROM lists WHERE lower(address) = lower(%s)", (addr,)):
                raise AlreadyExists(f"{addr} is an alias or a list already")
            if await _one(c, "SELECT 1 FROM accounts WHERE lower(address) = lower(%s)", (addr,)):
                raise AlreadyExists(f"account {addr} exists already")
            row = await _one(
                c, "INSERT INTO accounts(address, domain, password_hash, apop_secret, scram_sha256, created)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (addr, domain, password_hash, apop_secret, scram_sha256, time.time()))
            account_id = row[0]
            await _insert_mailbox(c, account_id, "INBOX", None, subscribe=True)
            for name, use in SPECIAL_USE_MAILBOXES:
                await _insert_mailbox(c, account_id, name, use, subscribe=True)
            return account_id

        account_id = await self._write(op, directory=True)
        account = await self.get_account_by_id(account_id)
        assert account is not None
        return account

    async def get_account(self, address: str) -> Account | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        row = await self._q1(f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE lower(address) = lower(%s)", (addr,))
        return Account(*row) if row else None

    async def get_account_by_id(self, account_id: int) -> Account | None:
        row = await self._q1(f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE id = %s", (account_id,))
        return Account(*row) if row else None

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        if domain is None:
            rows = await self._q(f'SELECT {_ACCOUNT_COLS} FROM accounts ORDER BY address COLLATE "C"')
        else:
            rows = await self._q(f'SELECT {_ACCOUNT_COLS} FROM accounts WHERE domain = %s ORDER BY address COLLATE "C"',
                                 (normalize_domain(domain),))
        return [Account(*r) for r in rows]

    async def set_password(self, address: str, password_hash: str, apop_secret: str | None = None,
                           scram_sha256: str | None = None) -> None:
        addr = normalize_address(address)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            cur = await c.execute(
                "UPDATE accounts SET password_hash = %s, apop_secret = %s, scram_sha256 = %s, epoch = epoch + 1"
                " WHERE lower(address) = lower(%s)", (password_hash, apop_secret, scram_sha256, addr))
            if cur.rowcount == 0:
                raise NotFound(f"no account {addr}")

        await self._write(op, directory=True, revoke=True)

    async def remove_account(self, address: str) -> None:
        addr = normalize_address(address)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            row = await _one(c, "SELECT id FROM accounts WHERE lower(address) = lower(%s) FOR UPDATE", (addr,))
            if row is None:
                raise NotFound(f"no account {addr}")
            for (mailbox_id,) in await _all(c, "SELECT id FROM mailboxes WHERE account_id = %s ORDER BY id FOR UPDATE",
                                            (row[0],)):
                await _drop_mailbox_messages(c, mailbox_id)
                tx.changed.add(mailbox_id)
            await c.execute("DELETE FROM accounts WHERE id = %s", (row[0],))

        await self._write(op, directory=True, revoke=True)

    # --- quotas ----------------------------------------------------------------
    async def set_quota(self, address: str, *, storage: int | None | Literal["keep"] = KEEP,
                        messages: int | None | Literal["keep"] = KEEP) -> Quota:
        addr = normalize_address(address)
        for name, value in (("storage", storage), ("message", messages)):
            if isinstance(value, int) and value < 0:
                raise InvalidName(f"a {name} limit cannot be negative")

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> Quota:
            row = await _one(c, "SELECT id FROM accounts WHERE lower(address) = lower(%s)", (addr,))
            if row is None:
                raise NotFound(f"no account {addr}")
            if storage != KEEP:
                await c.execute("UPDATE accounts SET quota_storage = %s WHERE id = %s", (storage, row[0]))
            if messages != KEEP:
                await c.execute("UPDATE accounts SET quota_messages = %s WHERE id = %s", (messages, row[0]))
            return quota_row(await _one(c, f"SELECT {QUOTA_COLS} FROM accounts WHERE id = %s", (row[0],)))

        return await self._write(op, directory=True)

    async def get_quota(self, account_id: int) -> Quota:
        row = await self._q1(f"SELECT {QUOTA_COLS} FROM accounts WHERE id = %s", (account_id,))
        if row is None:
            raise NotFound(f"no account with id {account_id}")
        return quota_row(row)

    # --- sender grants ------------------------------------------------------------
    async def allow_senders(self, address: str, patterns: Sequence[str]) -> list[str]:
        addr = normalize_address(address)
        grants = [normalize_sender_pattern(p) for p in patterns]
        if not grants:
            raise InvalidName("give at least one address or pattern")

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            row = await _one(c, "SELECT id FROM accounts WHERE lower(address) = lower(%s)", (addr,))
            if row is None:
                raise NotFound(f"no account {addr}")
            for g in grants:
                await c.execute("INSERT INTO sender_grants(account_id, pattern) VALUES (%s, %s)"
                                " ON CONFLICT DO NOTHING", (row[0], g))
            return row[0]

        return await self.allowed_senders(await self._write(op, directory=True))

    async def disallow_senders(self, address: str, patterns: Sequence[str] = ()) -> list[str]:
        addr = normalize_address(address)
        grants = [normalize_sender_pattern(p) for p in patterns]

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            row = await _one(c, "SELECT id FROM accounts WHERE lower(address) = lower(%s)", (addr,))
            if row is None:
                raise NotFound(f"no account {addr}")
            if grants:
                for g in grants:
                    await c.execute("DELETE FROM sender_grants WHERE account_id = %s AND lower(pattern) = lower(%s)",
                                    (row[0], g))
            else:
                await c.execute("DELETE FROM sender_grants WHERE account_id = %s", (row[0],))
            return row[0]

        return await self.allowed_senders(await self._write(op, directory=True))

    async def allowed_senders(self, account_id: int) -> list[str]:
        rows = await self._q('SELECT pattern FROM sender_grants WHERE account_id = %s ORDER BY pattern COLLATE "C"',
                             (account_id,))
        return [r[0] for r in rows]

    # --- webmail sessions -------------------------------------------------------------
    async def add_web_session(self, session: WebSession, keep_at_most: int, seen_after: float) -> None:
        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if await _one(c, "SELECT 1 FROM accounts WHERE id = %s", (session.account_id,)) is None:
                raise NotFound(f"no account with id {session.account_id}")
            await c.execute("DELETE FROM web_sessions WHERE account_id = %s AND last_seen < %s",
                            (session.account_id, seen_after))
            await c.execute(
                "INSERT INTO web_sessions(key, account_id, created, last_seen, ip, agent)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET account_id = excluded.account_id,"
                " created = excluded.created, last_seen = excluded.last_seen, ip = excluded.ip, agent = excluded.agent",
                (session.key, session.account_id, session.created, session.last_seen, session.ip, session.agent))
            await c.execute("DELETE FROM web_sessions WHERE key IN (SELECT key FROM web_sessions WHERE account_id = %s"
                            " ORDER BY last_seen DESC, key OFFSET %s)", (session.account_id, max(1, keep_at_most)))

        await self._write(op)

    async def get_web_session(self, key: str) -> WebSession | None:
        row = await self._q1("SELECT key, account_id, created, last_seen, ip, agent FROM web_sessions WHERE key = %s",
                             (key,))
        return WebSession(*row) if row else None

    async def list_web_sessions(self, account_id: int) -> list[WebSession]:
        rows = await self._q("SELECT key, account_id, created, last_seen, ip, agent FROM web_sessions"
                             " WHERE account_id = %s ORDER BY created DESC, key", (account_id,))
        return [WebSession(*r) for r in rows]

    async def touch_web_session(self, key: str, last_seen: float) -> bool:
        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> bool:
            cur = await c.execute("UPDATE web_sessions SET last_seen = greatest(last_seen, %s) WHERE key = %s",
                                  (last_seen, key))
            return cur.rowcount > 0

        return bool(await self._write(op))

    async def remove_web_sessions(self, account_id: int, keys: Sequence[str] | None = None,
                                  keep: str | None = None) -> int:
        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            if keys is None:
                cur = await c.execute("DELETE FROM web_sessions WHERE account_id = %s AND key IS DISTINCT FROM %s",
                                      (account_id, keep))
            else:
                cur = await c.execute("DELETE FROM web_sessions WHERE account_id = %s AND key = ANY(%s)",
                                      (account_id, list(keys)))
            return cur.rowcount

        return int(await self._write(op))

    # --- account settings -----------------------------------------------------------
    async def get_settings(self, account_id: int) -> dict[str, Any]:
        rows = await self._q("SELECT key, value FROM account_settings WHERE account_id = %s", (account_id,))
        return {key: json.loads(value) for key, value in rows}

    def settings_version(self) -> int | None:
        return self._settings_changes

    async def _settings_write(self, op: Callable[[psycopg.AsyncConnection, _Tx], Any]) -> None:
        """Run a write of account settings that tells the other stores
        (a SETTINGS note in its transaction), then move this store's own
        ``settings_version`` (also when the write failed: it may have
        committed before its answer was lost)."""

        async def noted(c: psycopg.AsyncConnection, tx: _Tx) -> Any:
            tx.notes.add(SETTINGS)
            return await op(c, tx)

        try:
            await self._write(noted)
        finally:
            self._settings_changes += 1

    async def set_settings(self, account_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        encoded: list[tuple[str, str | None]] = []
        for key, value in values.items():
            if not isinstance(key, str) or not key:
                raise InvalidName("a setting needs a name")
            try:
                encoded.append((key, None if value is None else json.dumps(value, allow_nan=False)))
            except (TypeError, ValueError) as exc:
                raise InvalidName(f"setting {key}: {exc}") from None

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if await _one(c, "SELECT 1 FROM accounts WHERE id = %s", (account_id,)) is None:
                raise NotFound(f"no account with id {account_id}")
            for key, text in encoded:
                if text is None:
                    await c.execute("DELETE FROM account_settings WHERE account_id = %s AND key = %s",
                                    (account_id, key))
                else:
                    await c.execute(
                        "INSERT INTO account_settings(account_id, key, value) VALUES (%s, %s, %s)"
                        " ON CONFLICT (account_id, key) DO UPDATE SET value = excluded.value",
                        (account_id, key, text))

        await self._settings_write(op)
        return await self.get_settings(account_id)

    async def update_setting_list(self, account_id: int, key: str, add: Sequence[str], cap: int) -> list[str]:
        if not isinstance(key, str) or not key:
            raise InvalidName("a setting needs a name")
        adding = [str(a) for a in add]
        result: list[str] = []

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            # the account's row locked: two merges into one list follow each other
            if await _one(c, "SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (account_id,)) is None:
                raise NotFound(f"no account with id {account_id}")
            row = await _one(c, "SELECT value FROM account_settings WHERE account_id = %s AND key = %s",
                             (account_id, key))
            current = json.loads(row[0]) if row is not None else []
            entries = merged_list(current, adding, cap)
            await c.execute(
                "INSERT INTO account_settings(account_id, key, value) VALUES (%s, %s, %s)"
                " ON CONFLICT (account_id, key) DO UPDATE SET value = excluded.value",
                (account_id, key, json.dumps(entries)))
            result[:] = entries

        await self._settings_write(op)
        return result

    # --- aliases and lists -------------------------------------------------------------
    async def add_alias(self, source: str, targets: Sequence[str]) -> None:
        src = alias_source(source)
        dests = [normalize_address(t) for t in targets]
        if not dests:
            raise InvalidName("an alias needs at least one target address")
        domain = src.rpartition("@")[2]

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if not await _one(c, "SELECT 1 FROM domains WHERE name = %s", (domain,)):
                raise NotFound(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
            target = await _domain_alias_target(c, domain)
            if src.startswith("@") and target is not None:
                raise AlreadyExists(f"{domain} is an alias of {target}: all its mail goes there already")
            if await _one(c, "SELECT 1 FROM accounts WHERE lower(address) = lower(%s)", (src,)) or await _one(
                    c, "SELECT 1 FROM lists WHERE lower(address) = lower(%s)", (src,)):
                raise AlreadyExists(f"{src} is an account or a list already")
            for d in dests:
                await c.execute("INSERT INTO aliases(source, target) VALUES (%s, %s) ON CONFLICT DO NOTHING", (src, d))

        await self._write(op, directory=True)

    async def remove_alias(self, source: str, targets: Sequence[str] = ()) -> None:
        src = alias_source(source)
        dests = [normalize_address(t) for t in targets]

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if not await _one(c, "SELECT 1 FROM aliases WHERE lower(source) = lower(%s) AND target NOT LIKE '@%%'",
                              (src,)):
                raise NotFound(f"no alias {src}")
            if dests:
                for d in dests:
                    await c.execute("DELETE FROM aliases WHERE lower(source) = lower(%s) AND lower(target) = lower(%s)",
                                    (src, d))
            else:
                await c.execute("DELETE FROM aliases WHERE lower(source) = lower(%s)", (src,))

        await self._write(op, directory=True)

    async def get_alias(self, source: str) -> list[str] | None:
        try:
            src = alias_source(source)
        except InvalidName:
            return None
        rows = await self._q('SELECT target FROM aliases WHERE lower(source) = lower(%s) ORDER BY lower(target) COLLATE "C"',
                             (src,))
        return [r[0] for r in rows] or None

    async def list_aliases(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for src, dst in await self._q("SELECT source, target FROM aliases WHERE target NOT LIKE '@%%'"
                                      ' ORDER BY lower(source) COLLATE "C", lower(target) COLLATE "C"'):
            out.setdefault(src, []).append(dst)
        return out

    async def add_domain_alias(self, alias: str, target: str) -> None:
        src = normalize_domain(alias)
        dst = normalize_domain(target)
        if src == dst:
            raise InvalidName(f"{src} cannot be an alias of itself")

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if await _one(c, "SELECT 1 FROM domains WHERE name = %s", (src,)):
                raise AlreadyExists(f"{src} is a local domain already; remove it first (mailyard domain remove {src})")
            if not await _one(c, "SELECT 1 FROM domains WHERE name = %s", (dst,)):
                raise NotFound(f"{dst} is not a local domain; add it first (mailyard domain add {dst})")
            other = await _domain_alias_target(c, dst)
            if other is not None:
                raise StoreError(f"{dst} is itself an alias of {other}; name {other}")
            await c.execute("INSERT INTO domains(name) VALUES (%s)", (src,))
            await c.execute("INSERT INTO aliases(source, target) VALUES (%s, %s)", ("@" + src, "@" + dst))

        await self._write(op, directory=True)

    async def remove_domain_alias(self, alias: str) -> None:
        src = normalize_domain(alias)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if await _domain_alias_target(c, src) is None:
                raise NotFound(f"no domain alias {src}")
            like = "%@" + src
            used = (await _one(c, "SELECT count(*) FROM aliases WHERE lower(source) LIKE %s AND lower(source) != %s",
                               (like, "@" + src)))[0]
            used += (await _one(c, "SELECT count(*) FROM lists WHERE lower(address) LIKE %s", (like,)))[0]
            if used:
                raise StoreError(f"{src} still has {used} alias(es) or list(s) of its own; remove them first")
            await c.execute("DELETE FROM aliases WHERE lower(source) = %s", ("@" + src,))
            await c.execute("DELETE FROM domains WHERE name = %s", (src,))

        await self._write(op, directory=True)

    async def list_domain_aliases(self) -> dict[str, str]:
        return {src[1:]: dst[1:] for src, dst in await self._q(
            "SELECT source, target FROM aliases WHERE source LIKE '@%%' AND target LIKE '@%%' ORDER BY source")}

    async def remove_address_everywhere(self, address: str) -> tuple[list[str], list[str]]:
        addr = normalize_address(address)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> tuple[list[str], list[str]]:
            aliases = [r[0] for r in await _all(
                c, "SELECT source FROM aliases WHERE lower(target) = lower(%s) ORDER BY source", (addr,))]
            lists = [r[0] for r in await _all(
                c, "SELECT list FROM list_members WHERE lower(member) = lower(%s) ORDER BY list", (addr,))]
            await c.execute("DELETE FROM aliases WHERE lower(target) = lower(%s)", (addr,))
            await c.execute("DELETE FROM list_members WHERE lower(member) = lower(%s)", (addr,))
            return aliases, lists

        return await self._write(op, directory=True)

    async def add_list(self, address: str) -> None:
        addr = normalize_address(address)
        domain = addr.rpartition("@")[2]

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if not await _one(c, "SELECT 1 FROM domains WHERE name = %s", (domain,)):
                raise NotFound(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
            if await _one(c, "SELECT 1 FROM accounts WHERE lower(address) = lower(%s)", (addr,)) or await _one(
                    c, "SELECT 1 FROM aliases WHERE lower(source) = lower(%s)", (addr,)):
                raise AlreadyExists(f"{addr} is an account or an alias already")
            if await _one(c, "SELECT 1 FROM lists WHERE lower(address) = lower(%s)", (addr,)):
                raise AlreadyExists(f"list {addr} exists already")
            await c.execute("INSERT INTO lists(address) VALUES (%s)", (addr,))

        await self._write(op, directory=True)

    async def remove_list(self, address: str) -> None:
        addr = normalize_address(address)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if (await c.execute("DELETE FROM lists WHERE lower(address) = lower(%s)", (addr,))).rowcount == 0:
                raise NotFound(f"no list {addr}")
            await c.execute("DELETE FROM list_members WHERE lower(list) = lower(%s)", (addr,))

        await self._write(op, directory=True)

    async def subscribe_list(self, address: str, member: str) -> None:
        addr = normalize_address(address)
        who = normalize_address(member)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            row = await _one(c, "SELECT address FROM lists WHERE lower(address) = lower(%s)", (addr,))
            if not row:
                raise NotFound(f"no list {addr}")
            await c.execute("INSERT INTO list_members(list, member) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                            (row[0], who))

        await self._write(op, directory=True)

    async def unsubscribe_list(self, address: str, member: str) -> None:
        addr = normalize_address(address)
        who = normalize_address(member)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if not await _one(c, "SELECT 1 FROM lists WHERE lower(address) = lower(%s)", (addr,)):
                raise NotFound(f"no list {addr}")
            cur = await c.execute("DELETE FROM list_members WHERE lower(list) = lower(%s) AND lower(member) = lower(%s)",
                                  (addr, who))
            if cur.rowcount == 0:
                raise NotFound(f"{who} is not a member of {addr}")

        await self._write(op, directory=True)

    async def get_list_members(self, address: str) -> list[str] | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        if await self._q1("SELECT 1 FROM lists WHERE lower(address) = lower(%s)", (addr,)) is None:
            return None
        return [r[0] for r in await self._q(
            'SELECT member FROM list_members WHERE lower(list) = lower(%s) ORDER BY lower(member) COLLATE "C"', (addr,))]

    async def list_lists(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {r[0]: [] for r in await self._q(
            'SELECT address FROM lists ORDER BY lower(address) COLLATE "C"')}
        keys = {k.lower(): k for k in out}
        for lst, member in await self._q(
                'SELECT list, member FROM list_members ORDER BY lower(list) COLLATE "C", lower(member) COLLATE "C"'):
            out.setdefault(keys.get(lst.lower(), lst), []).append(member)
        return out
