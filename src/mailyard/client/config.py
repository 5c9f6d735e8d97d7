"""Mail client accounts: where they live, what they hold, how passwords are found.

What: ``Account`` (address, IMAP/POP3/submission endpoints with their security,
TLS verification, folder names, the local Maildir for POP3 fetches) and
``AccountStore`` which reads and writes ``accounts.toml`` in the client's
configuration directory.

Where: ``--config-dir DIR``, else ``$MAILYARD_CLIENT_HOME``, else the user
configuration directory from platformdirs (``~/.config/mailyard`` on Linux).

Passwords are never in ``accounts.toml``. Each account names one source:
``password_file`` (written with mode 0600 by ``account add``; a file others can
read is refused), ``password_env`` (the name of an environment variable) or
``password_command`` (a shell command whose first output line is the password,
e.g. ``pass show mail/alice``).
"""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TLS_MODE_ALIASES
from ..fsutil import write_atomic

# Connection security, in the server's vocabulary (config.TLS_MODES): TLS from
# the first byte (RFC 8314 "implicit TLS"), STARTTLS required, or none.
SECURITY = ("implicit", "starttls", "none")
# "auto": authenticate when the server offers AUTH; "yes": always; "no": never.
SMTP_AUTH = ("auto", "yes", "no")
# Earlier words, still accepted with a deprecation message.
SECURITY_ALIASES = {k: v for k, v in TLS_MODE_ALIASES.items() if v in SECURITY}


def normalize_security(word: str, where: str = "") -> str:
    """The SECURITY word for ``word``; an old word prints a deprecation
    message on stderr naming ``where`` (e.g. the file and account)."""
    word = word.strip().lower()
    if word in SECURITY:
        return word
    if word in SECURITY_ALIASES:
        new = SECURITY_ALIASES[word]
        prefix = f"{where}: " if where else ""
        print(f'mailyard: warning: {prefix}security "{word}" is deprecated, write "{new}" '
              "(the old word still works)", file=sys.stderr)
        return new
    prefix = f"{where}: " if where else ""
    raise ClientError(f'{prefix}security must be one of {", ".join(SECURITY)}, not "{word}"')


class ClientError(Exception):
    """A user-facing error of the mail client: printed as one line, exit status 1."""


@dataclass
class Endpoint:
    host: str = ""
    port: int = 0
    security: str = "implicit"  # implicit (TLS from the first byte), starttls, none

    def __post_init__(self) -> None:
        # Code may still name the old words; files and options warn (normalize_security).
        self.security = SECURITY_ALIASES.get(self.security, self.security)

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"


@dataclass
class Account:
    name: str
    address: str
    display_name: str = ""
    username: str = ""  # login name; the address when empty
    imap: Endpoint = field(default_factory=lambda: Endpoint(security="implicit"))
    pop3: Endpoint = field(default_factory=lambda: Endpoint(security="implicit"))
    smtp: Endpoint = field(default_factory=lambda: Endpoint(security="starttls"))
    # "auto": authenticate when the server offers AUTH; "yes": always; "no": never.
    smtp_auth: str = "auto"
    tls_verify: bool = True
    cafile: str = ""
    password_file: str = ""
    password_env: str = ""
    password_command: str = ""
    # Other addresses of this user, left out of reply-all besides ``address``.
    aliases: list[str] = field(default_factory=list)
    sent_folder: str = ""  # empty: the server's \Sent folder (RFC 6154), else "Sent"
    trash_folder: str = ""  # empty: the server's \Trash folder, else "Trash"
    maildir: str = ""  # POP3 fetch target; empty: <config dir>/maildir/<account>

    @property
    def login(self) -> str:
        return self.username or self.address

    def own_addresses(self) -> set[str]:
        return {a.lower() for a in [self.address, *self.aliases]}

    def password(self) -> str:
        """The password from the account's source; ClientError says what is missing."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ClientError(f"account {self.name}: environment variable {self.password_env} is not set")
            return value
        if self.password_command:
            try:
                out = subprocess.run(
                    self.password_command, shell=True, capture_output=True, text=True, timeout=60, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ClientError(f"account {self.name}: password command failed: {exc}") from exc
            if out.returncode != 0:
                raise ClientError(
                    f"account {self.name}: password command exited with {out.returncode}: {out.stderr.strip()}"
                )
            return out.stdout.splitlines()[0] if out.stdout else ""
        if self.password_file:
            path = Path(self.password_file).expanduser()
            try:
                mode = path.stat().st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise ClientError(
                        f"password file {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                        f"fix it with: chmod 600 {path}"
                    )
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ClientError(f"account {self.name}: cannot read password file {path}: {exc.strerror}") from exc
        raise ClientError(f"account {self.name} has no password source; add it again with a password")

    def ssl_context(self):  # -> ssl.SSLContext
        import ssl

        ctx = ssl.create_default_context(cafile=self.cafile or None)
        if not self.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def guess_endpoints(address: str) -> dict[str, Endpoint]:
    """Defaults from the address's domain: the conventional host names and the
    standard ports with TLS (RFC 8314: implicit TLS for IMAP and POP3; RFC 6409
    submission on 587 with STARTTLS)."""
    domain = address.rpartition("@")[2].lower() or "localhost"
    return {
        "imap": Endpoint(f"imap.{domain}", 993, "implicit"),
        "pop3": Endpoint(f"pop.{domain}", 995, "implicit"),
        "smtp": Endpoint(f"smtp.{domain}", 587, "starttls"),
    }


DEFAULT_PORTS = {
    ("imap", "implicit"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
    ("pop3", "implicit"): 995, ("pop3", "starttls"): 110, ("pop3", "none"): 110,
    ("smtp", "implicit"): 465, ("smtp", "starttls"): 587, ("smtp", "none"): 587,
}


def config_dir(override: str | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    env = os.environ.get("MAILYARD_CLIENT_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("mailyard", appauthor=False))


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    s = str(value)
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    out = "".join(ch if ch >= " " and ch != "\x7f" else f"\\u{ord(ch):04x}" for ch in out)
    return f'"{out}"'


def _toml_key(key: str) -> str:
    return key if key.replace("-", "").replace("_", "").isalnum() and key.isascii() else _toml_value(key)


class AccountStore:
    """``accounts.toml``: ``default = "name"`` and one ``[accounts.NAME]`` table each."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "accounts.toml"
        self.default: str = ""
        self.accounts: dict[str, Account] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ClientError(f"cannot read {self.path}: {exc}") from exc
        self.default = str(data.get("default", ""))
        known = {f.name for f in dataclasses.fields(Account)}
        for name, table in (data.get("accounts") or {}).items():
            kwargs: dict = {"name": name}
            for key, value in table.items():
                if key in ("imap", "pop3", "smtp"):
                    security = normalize_security(str(value.get("security", "implicit")),
                                                  f"{self.path}: account {name} [{key}]")
                    kwargs[key] = Endpoint(str(value.get("host", "")), int(value.get("port", 0)), security)
                elif key in known and key != "name":
                    kwargs[key] = value
                else:
                    raise ClientError(f"{self.path}: unknown setting {key!r} in account {name}")
            if "address" not in kwargs:
                raise ClientError(f"{self.path}: account {name} has no address")
            auth = kwargs.get("smtp_auth", "auto")
            if auth not in SMTP_AUTH:
                raise ClientError(f'{self.path}: account {name}: smtp_auth must be one of '
                                  f'{", ".join(SMTP_AUTH)}, not "{auth}"')
            self.accounts[name] = Account(**kwargs)

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = ["# mailyard mail client accounts (passwords are kept elsewhere: see password_*)", ""]
        if self.default:
            lines += [f"default = {_toml_value(self.default)}", ""]
        for name, acct in self.accounts.items():
            lines.append(f"[accounts.{_toml_key(name)}]")
            for f in dataclasses.fields(Account):
                if f.name == "name" or f.name in ("imap", "pop3", "smtp"):
                    continue
                lines.append(f"{f.name} = {_toml_value(getattr(acct, f.name))}")
            for proto in ("imap", "pop3", "smtp"):
                ep: Endpoint = getattr(acct, proto)
                lines.append(f"[accounts.{_toml_key(name)}.{proto}]")
                lines.append(f"host = {_toml_value(ep.host)}")
                lines.append(f"port = {ep.port}")
                lines.append(f"security = {_toml_value(ep.security)}")
            lines.append("")
        write_atomic(self.path, "\n".join(lines).encode("utf-8"))

    def get(self, name: str | None) -> Account:
        if not self.accounts:
            raise ClientError("no mail account yet; add one with: mailyard mail account add")
        if name:
            if name in self.accounts:
                return self.accounts[name]
            for acct in self.accounts.values():
                if acct.address.lower() == name.lower():
                    return acct
            raise ClientError(f"no account {name!r}; known: {', '.join(self.accounts)}")
        if self.default in self.accounts:
            return self.accounts[self.default]
        if len(self.accounts) == 1:
            return next(iter(self.accounts.values()))
        raise ClientError(f"several accounts ({', '.join(self.accounts)}): choose one with --account")

    def write_password(self, name: str, password: str) -> Path:
        """Store a password in ``passwords/NAME`` with mode 0600 (created so, never widened)."""
        pdir = self.dir / "passwords"
        pdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = pdir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, password.encode("utf-8"))
        finally:
            os.close(fd)
        return path

    def state_dir(self) -> Path:
        d = self.dir / "state"
        d.mkdir(parents=True, exist_ok=True)
        return d
