"""The directory: domains, accounts, sender grants, aliases and lists.

These are the names mail is addressed to (the router reads them through the
Store API) and the credentials sessions log in with. Every write here moves
``directory_version`` (caches of lookups forget); the writes that end
sessions (a password change, an account removed) also bump the revocation
signal, so every process sharing the data directory sees them at once.
An address is one account, one alias or one list, never two of them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

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
from ..rows import merged_list
from .core import SQLiteCore
from .mailboxes import insert_mailbox
from .messages import QUOTA_COLS, drop_mailbox_messages, quota_row
from .writer import WriteContext

ACCOUNT_COLS = "id, address, password_hash, apop_secret, scram_sha256, epoch"


class DirectoryMixin(SQLiteCore):
    """Domains, accounts, sender grants, aliases and lists."""

    # --- domains ----------------------------------------------------------
    async def add_domain(self, name: str) -> None:
        domain = normalize_domain(name)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            try:
                c.execute("INSERT INTO domains(name) VALUES (?)", (domain,))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"domain {domain} exists already") from None

        await self._write(op, directory=True)

    async def remove_domain(self, name: str) -> None:
        domain = normalize_domain(name)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if not c.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone():
                raise NotFound(f"no domain {domain}")
            target = _domain_alias_target(c, domain)
            if target is not None:
                raise StoreError(f"{domain} is an alias of {target}; remove it with: "
                                 f"mailyard domain alias remove {domain}")
            aliased = [r[0][1:] for r in c.execute(
                "SELECT source FROM aliases WHERE target = ? ORDER BY source", ("@" + domain,))]
            if aliased:
                raise StoreError(f"domain {domain} is the target of the domain alias(es) {', '.join(aliased)}; "
                                 "remove them first")
            like = "%@" + domain
            used = c.execute("SELECT count(*) FROM accounts WHERE domain = ?", (domain,)).fetchone()[0]
            used += c.execute("SELECT count(*) FROM aliases WHERE source LIKE ?", (like,)).fetchone()[0]
            used += c.execute("SELECT count(*) FROM lists WHERE address LIKE ?", (like,)).fetchone()[0]
            if used:
                raise StoreError(
                    f"domain {domain} still has {used} account(s), alias(es) or list(s); remove them first"
                )
            c.execute("DELETE FROM domains WHERE name = ?", (domain,))

        await self._write(op, directory=True)

    async def list_domains(self) -> list[str]:
        return [r[0] for r in self._q("SELECT name FROM domains ORDER BY name")]

    async def is_local_domain(self, name: str) -> bool:
        try:
            domain = normalize_domain(name)
        except InvalidName:
            return False
        return self._q1("SELECT 1 FROM domains WHERE name = ?", (domain,)) is not None

    # --- accounts ---------------------------------------------------------
    async def add_account(
        self,
        address: str,
        password_hash: str,
        apop_secret: str | None = None,
        scram_sha256: str | None = None,
    ) -> Account:
        addr = normalize_address(address)
        domain = addr.rpartition("@")[2]

        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            if not c.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone():
                raise NotFound(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
            target = _domain_alias_target(c, domain)
            if target is not None:
                raise StoreError(f"{domain} is an alias of {target}; add the account there")
            if c.execute("SELECT 1 FROM aliases WHERE source = ?", (addr,)).fetchone() or c.execute(
                "SELECT 1 FROM lists WHERE address = ?", (addr,)
            ).fetchone():
                raise AlreadyExists(f"{addr} is an alias or a list already")
            try:
                cur = c.execute(
                    "INSERT INTO accounts(address, domain, password_hash, apop_secret, scram_sha256, created)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (addr, domain, password_hash, apop_secret, scram_sha256, time.time()),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"account {addr} exists already") from None
            account_id = cur.lastrowid
            assert account_id is not None
            insert_mailbox(c, account_id, "INBOX", None, subscribe=True)
            for name, use in SPECIAL_USE_MAILBOXES:
                insert_mailbox(c, account_id, name, use, subscribe=True)
            return account_id

        account_id = await self._write(op, directory=True)
        return Account(account_id, addr, password_hash, apop_secret, scram_sha256, 0)

    async def get_account(self, address: str) -> Account | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        row = self._q1(f"SELECT {ACCOUNT_COLS} FROM accounts WHERE address = ?", (addr,))
        return Account(*row) if row else None

    async def get_account_by_id(self, account_id: int) -> Account | None:
        row = self._q1(f"SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?", (account_id,))
        return Account(*row) if row else None

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        sql = f"SELECT {ACCOUNT_COLS} FROM accounts"
        args: tuple = ()
        if domain is not None:
            sql += " WHERE domain = ?"
            args = (normalize_domain(domain),)
        return [Account(*r) for r in self._q(sql + " ORDER BY address", args)]

    async def set_password(
        self,
        address: str,
        password_hash: str,
        apop_secret: str | None = None,
        scram_sha256: str | None = None,
    ) -> None:
        addr = normalize_address(address)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            cur = c.execute(
                "UPDATE accounts SET password_hash = ?, apop_secret = ?, scram_sha256 = ?, epoch = epoch + 1"
                " WHERE address = ?",
                (password_hash, apop_secret, scram_sha256, addr),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no account {addr}")

        # a new password ends every session logged in under the old one
        await self._write(op, directory=True, revoke=True)

    async def remove_account(self, address: str) -> None:
        addr = normalize_address(address)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            row = c.execute("SELECT id FROM accounts WHERE address = ?", (addr,)).fetchone()
            if row is None:
                raise NotFound(f"no account {addr}")
            for (mailbox_id,) in c.execute("SELECT id FROM mailboxes WHERE account_id = ?", (row[0],)).fetchall():
                drop_mailbox_messages(c, mailbox_id)
                ctx.changed.add(mailbox_id)
            c.execute("DELETE FROM accounts WHERE id = ?", (row[0],))

        await self._write(op, directory=True, revoke=True)

    # --- quotas (RFC 9208) -------------------------------------------------
    async def set_quota(
        self,
        address: str,
        *,
        storage: int | None | Literal["keep"] = KEEP,
        messages: int | None | Literal["keep"] = KEEP,
    ) -> Quota:
        addr = normalize_address(address)
        for name, value in (("storage", storage), ("message", messages)):
            if isinstance(value, int) and value < 0:
                raise InvalidName(f"a {name} limit cannot be negative")

        def op(c: sqlite3.Connection, ctx: WriteContext) -> Quota:
            row = c.execute("SELECT id FROM accounts WHERE address = ?", (addr,)).fetchone()
            if row is None:
                raise NotFound(f"no account {addr}")
            if storage != KEEP:
                c.execute("UPDATE accounts SET quota_storage = ? WHERE id = ?", (storage, row[0]))
            if messages != KEEP:
                c.execute("UPDATE accounts SET quota_messages = ? WHERE id = ?", (messages, row[0]))
            return quota_row(c.execute(f"SELECT {QUOTA_COLS} FROM accounts WHERE id = ?", (row[0],)).fetchone())

        return await self._write(op, directory=True)

    async def get_quota(self, account_id: int) -> Quota:
        row = self._q1(f"SELECT {QUOTA_COLS} FROM accounts WHERE id = ?", (account_id,))
        if row is None:
            raise NotFound(f"no account with id {account_id}")
        return quota_row(row)

    # --- sender grants ----------------------------------------------------
    async def allow_senders(self, address: str, patterns: Sequence[str]) -> list[str]:
        addr = normalize_address(address)
        grants = [normalize_sender_pattern(p) for p in patterns]
        if not grants:
            raise InvalidName("give at least one address or pattern")

        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            row = c.execute("SELECT id FROM accounts WHERE address = ?", (addr,)).fetchone()
            if row is None:
                raise NotFound(f"no account {addr}")
            c.executemany(
                "INSERT OR IGNORE INTO sender_grants(account_id, pattern) VALUES (?, ?)",
                [(row[0], g) for g in grants],
            )
            return row[0]

        account_id = await self._write(op, directory=True)
        return await self.allowed_senders(account_id)

    async def disallow_senders(self, address: str, patterns: Sequence[str] = ()) -> list[str]:
        addr = normalize_address(address)
        grants = [normalize_sender_pattern(p) for p in patterns]

        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            row = c.execute("SELECT id FROM accounts WHERE address = ?", (addr,)).fetchone()
            if row is None:
                raise NotFound(f"no account {addr}")
            if grants:
                c.executemany(
                    "DELETE FROM sender_grants WHERE account_id = ? AND pattern = ?",
                    [(row[0], g) for g in grants],
                )
            else:
                c.execute("DELETE FROM sender_grants WHERE account_id = ?", (row[0],))
            return row[0]

        account_id = await self._write(op, directory=True)
        return await self.allowed_senders(account_id)

    async def allowed_senders(self, account_id: int) -> list[str]:
        rows = self._q("SELECT pattern FROM sender_grants WHERE account_id = ? ORDER BY pattern", (account_id,))
        return [r[0] for r in rows]

    # --- webmail sessions ----------------------------------------------------
    async def add_web_session(self, session: WebSession, keep_at_most: int, seen_after: float) -> None:
        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if c.execute("SELECT 1 FROM accounts WHERE id = ?", (session.account_id,)).fetchone() is None:
                raise NotFound(f"no account with id {session.account_id}")
            c.execute("DELETE FROM web_sessions WHERE account_id = ? AND last_seen < ?",
                      (session.account_id, seen_after))
            c.execute("INSERT OR REPLACE INTO web_sessions(key, account_id, created, last_seen, ip, agent)"
                      " VALUES (?, ?, ?, ?, ?, ?)", (session.key, session.account_id, session.created,
                                                     session.last_seen, session.ip, session.agent))
            c.execute("DELETE FROM web_sessions WHERE key IN (SELECT key FROM web_sessions WHERE account_id = ?"
                      " ORDER BY last_seen DESC, key LIMIT -1 OFFSET ?)", (session.account_id, max(1, keep_at_most)))

        await self._write(op)

    async def get_web_session(self, key: str) -> WebSession | None:
        row = self._q1("SELECT key, account_id, created, last_seen, ip, agent FROM web_sessions WHERE key = ?", (key,))
        return WebSession(*row) if row else None

    async def list_web_sessions(self, account_id: int) -> list[WebSession]:
        rows = self._q("SELECT key, account_id, created, last_seen, ip, agent FROM web_sessions"
                       " WHERE account_id = ? ORDER BY created DESC, key", (account_id,))
        return [WebSession(*r) for r in rows]

    async def touch_web_session(self, key: str, last_seen: float) -> bool:
        def op(c: sqlite3.Connection, ctx: WriteContext) -> bool:
            return c.execute("UPDATE web_sessions SET last_seen = max(last_seen, ?) WHERE key = ?",
                             (last_seen, key)).rowcount > 0

        return bool(await self._write(op))

    async def remove_web_sessions(self, account_id: int, keys: Sequence[str] | None = None,
                                  keep: str | None = None) -> int:
        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            if keys is None:
                return c.execute("DELETE FROM web_sessions WHERE account_id = ? AND key IS NOT ?",
                                 (account_id, keep)).rowcount
            return sum(c.execute("DELETE FROM web_sessions WHERE account_id = ? AND key = ?",
                                 (account_id, k)).rowcount for k in keys)

        return int(await self._write(op))

    # --- account settings -------------------------------------------------
    async def get_settings(self, account_id: int) -> dict[str, Any]:
        rows = self._q("SELECT key, value FROM account_settings WHERE account_id = ?", (account_id,))
        return {key: json.loads(value) for key, value in rows}

    def settings_version(self) -> int | None:
        return self._settings_changes.value()

    async def _settings_write(self, op: Callable[[sqlite3.Connection, WriteContext], Any]) -> None:
        """Run a write of account settings, then move ``settings_version``
        for every process (also when the write failed: it may have committed
        before its answer was lost, and a needless move only costs a read)."""
        try:
            await self._write(op)
        finally:
            self._settings_changes.bump()

    async def set_settings(self, account_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        encoded: list[tuple[str, str | None]] = []
        for key, value in values.items():
            if not isinstance(key, str) or not key:
                raise InvalidName("a setting needs a name")
            try:
                encoded.append((key, None if value is None else json.dumps(value, allow_nan=False)))
            except (TypeError, ValueError) as exc:
                raise InvalidName(f"setting {key}: {exc}") from None

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if c.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
                raise NotFound(f"no account with id {account_id}")
            for key, text in encoded:
                if text is None:
                    c.execute("DELETE FROM account_settings WHERE account_id = ? AND key = ?", (account_id, key))
                else:
                    c.execute(
                        "INSERT OR REPLACE INTO account_settings(account_id, key, value) VALUES (?, ?, ?)",
                        (account_id, key, text),
                    )

        await self._settings_write(op)
        return await self.get_settings(account_id)

    async def update_setting_list(self, account_id: int, key: str, add: Sequence[str], cap: int) -> list[str]:
        if not isinstance(key, str) or not key:
            raise InvalidName("a setting needs a name")
        adding = [str(a) for a in add]
        result: list[str] = []

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            # read and write in the writer's one transaction: nothing in between
            if c.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
                raise NotFound(f"no account with id {account_id}")
            row = c.execute("SELECT value FROM account_settings WHERE account_id = ? AND key = ?",
                            (account_id, key)).fetchone()
            current = json.loads(row[0]) if row is not None else []
            entries = merged_list(current, adding, cap)
            c.execute("INSERT OR REPLACE INTO account_settings(account_id, key, value) VALUES (?, ?, ?)",
                      (account_id, key, json.dumps(entries)))
            result[:] = entries

        await self._settings_write(op)
        return result

    # --- aliases and lists ------------------------------------------------
    async def add_alias(self, source: str, targets: Sequence[str]) -> None:
        src = alias_source(source)
        dests = [normalize_address(t) for t in targets]
        if not dests:
            raise InvalidName("an alias needs at least one target address")
        domain = src.rpartition("@")[2]

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if not c.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone():
                raise NotFound(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
            target = _domain_alias_target(c, domain)
            if src.startswith("@") and target is not None:
                raise AlreadyExists(f"{domain} is an alias of {target}: all its mail goes there already")
            if c.execute("SELECT 1 FROM accounts WHERE address = ?", (src,)).fetchone() or c.execute(
                "SELECT 1 FROM lists WHERE address = ?", (src,)
            ).fetchone():
                raise AlreadyExists(f"{src} is an account or a list already")
            c.executemany("INSERT OR IGNORE INTO aliases(source, target) VALUES (?, ?)", [(src, d) for d in dests])

        await self._write(op, directory=True)

    async def remove_alias(self, source: str, targets: Sequence[str] = ()) -> None:
        src = alias_source(source)
        dests = [normalize_address(t) for t in targets]

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if not c.execute("SELECT 1 FROM aliases WHERE source = ? AND target NOT LIKE '@%'", (src,)).fetchone():
                raise NotFound(f"no alias {src}")
            if dests:
                c.executemany("DELETE FROM aliases WHERE source = ? AND target = ?", [(src, d) for d in dests])
            else:
                c.execute("DELETE FROM aliases WHERE source = ?", (src,))

        await self._write(op, directory=True)

    async def get_alias(self, source: str) -> list[str] | None:
        """The targets of an alias; for a domain alias's ``@domain``, the
        target domain as ``@target`` (the router keeps the local part)."""
        try:
            src = alias_source(source)
        except InvalidName:
            return None
        rows = self._q("SELECT target FROM aliases WHERE source = ? ORDER BY target", (src,))
        return [r[0] for r in rows] or None

    async def list_aliases(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for src, dst in self._q(
            "SELECT source, target FROM aliases WHERE target NOT LIKE '@%' ORDER BY source, target"
        ):
            out.setdefault(src, []).append(dst)
        return out

    # A domain alias is the local domain ``alias`` (a row in domains, so RCPT
    # and the relay rules see a local domain) plus the alias row
    # ``@alias -> @target``, Postfix's virtual alias map notation.
    async def add_domain_alias(self, alias: str, target: str) -> None:
        src = normalize_domain(alias)
        dst = normalize_domain(target)
        if src == dst:
            raise InvalidName(f"{src} cannot be an alias of itself")

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if c.execute("SELECT 1 FROM domains WHERE name = ?", (src,)).fetchone():
                raise AlreadyExists(f"{src} is a local domain already; remove it first (mailyard domain remove {src})")
            if not c.execute("SELECT 1 FROM domains WHERE name = ?", (dst,)).fetchone():
                raise NotFound(f"{dst} is not a local domain; add it first (mailyard domain add {dst})")
            other = _domain_alias_target(c, dst)
            if other is not None:
                raise StoreError(f"{dst} is itself an alias of {other}; name {other}")
            c.execute("INSERT INTO domains(name) VALUES (?)", (src,))
            c.execute("INSERT INTO aliases(source, target) VALUES (?, ?)", ("@" + src, "@" + dst))

        await self._write(op, directory=True)

    async def remove_domain_alias(self, alias: str) -> None:
        src = normalize_domain(alias)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if _domain_alias_target(c, src) is None:
                raise NotFound(f"no domain alias {src}")
            like = "%@" + src
            used = c.execute("SELECT count(*) FROM aliases WHERE source LIKE ? AND source != ?",
                             (like, "@" + src)).fetchone()[0]
            used += c.execute("SELECT count(*) FROM lists WHERE address LIKE ?", (like,)).fetchone()[0]
            if used:
                raise StoreError(f"{src} still has {used} alias(es) or list(s) of its own; remove them first")
            c.execute("DELETE FROM aliases WHERE source = ?", ("@" + src,))
            c.execute("DELETE FROM domains WHERE name = ?", (src,))

        await self._write(op, directory=True)

    async def list_domain_aliases(self) -> dict[str, str]:
        return {
            src[1:]: dst[1:]
            for src, dst in self._q(
                "SELECT source, target FROM aliases WHERE source LIKE '@%' AND target LIKE '@%' ORDER BY source"
            )
        }

    async def remove_address_everywhere(self, address: str) -> tuple[list[str], list[str]]:
        addr = normalize_address(address)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> tuple[list[str], list[str]]:
            aliases = [r[0] for r in c.execute(
                "SELECT source FROM aliases WHERE target = ? ORDER BY source", (addr,))]
            lists = [r[0] for r in c.execute(
                "SELECT list FROM list_members WHERE member = ? ORDER BY list", (addr,))]
            c.execute("DELETE FROM aliases WHERE target = ?", (addr,))
            c.execute("DELETE FROM list_members WHERE member = ?", (addr,))
            return aliases, lists

        return await self._write(op, directory=True)

    async def add_list(self, address: str) -> None:
        addr = normalize_address(address)
        domain = addr.rpartition("@")[2]

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if not c.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone():
                raise NotFound(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
            if c.execute("SELECT 1 FROM accounts WHERE address = ?", (addr,)).fetchone() or c.execute(
                "SELECT 1 FROM aliases WHERE source = ?", (addr,)
            ).fetchone():
                raise AlreadyExists(f"{addr} is an account or an alias already")
            try:
                c.execute("INSERT INTO lists(address) VALUES (?)", (addr,))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"list {addr} exists already") from None

        await self._write(op, directory=True)

    async def remove_list(self, address: str) -> None:
        addr = normalize_address(address)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if c.execute("DELETE FROM lists WHERE address = ?", (addr,)).rowcount == 0:
                raise NotFound(f"no list {addr}")

        await self._write(op, directory=True)

    async def subscribe_list(self, address: str, member: str) -> None:
        addr = normalize_address(address)
        who = normalize_address(member)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if not c.execute("SELECT 1 FROM lists WHERE address = ?", (addr,)).fetchone():
                raise NotFound(f"no list {addr}")
            c.execute("INSERT OR IGNORE INTO list_members(list, member) VALUES (?, ?)", (addr, who))

        await self._write(op, directory=True)

    async def unsubscribe_list(self, address: str, member: str) -> None:
        addr = normalize_address(address)
        who = normalize_address(member)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if not c.execute("SELECT 1 FROM lists WHERE address = ?", (addr,)).fetchone():
                raise NotFound(f"no list {addr}")
            if c.execute("DELETE FROM list_members WHERE list = ? AND member = ?", (addr, who)).rowcount == 0:
                raise NotFound(f"{who} is not a member of {addr}")

        await self._write(op, directory=True)

    async def get_list_members(self, address: str) -> list[str] | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        if self._q1("SELECT 1 FROM lists WHERE address = ?", (addr,)) is None:
            return None
        return [r[0] for r in self._q("SELECT member FROM list_members WHERE list = ? ORDER BY member", (addr,))]

    async def list_lists(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {r[0]: [] for r in self._q("SELECT address FROM lists ORDER BY address")}
        for lst, member in self._q("SELECT list, member FROM list_members ORDER BY list, member"):
            out.setdefault(lst, []).append(member)
        return out


def _domain_alias_target(c: sqlite3.Connection, domain: str) -> str | None:
    """The domain ``domain`` is an alias of, or None."""
    row = c.execute(
        "SELECT target FROM aliases WHERE source = ? AND target LIKE '@%'", ("@" + domain,)
    ).fetchone()
    return row[0][1:] if row else None
