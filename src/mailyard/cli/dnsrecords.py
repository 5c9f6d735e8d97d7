"""``mailyard dkim`` and ``mailyard dns``: a domain's DKIM keys and the DNS
records it publishes, printed or checked against DNS."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import Config
from .common import CLIError, load_config, require_data_dir


def ensure_dkim_keys(d: Path, domain: str) -> None:
    """A DKIM key pair generation for ``domain`` unless it has one (mailauth/keys.py)."""
    from ..mailauth import keys

    if keys.active_generation(d, domain) is None:
        gen = keys.generate(d, domain, activate=True)
        print(f"made DKIM keys for {domain.lower()} (selectors {gen}-rsa, {gen}-ed25519); "
              f"publish them: mailyard dns {domain.lower()}")


def _auth_resolver(cfg: Config) -> Any:
    from ..mailauth.dnscache import Resolver

    return Resolver(cfg.delivery.nameservers, cfg.authentication.dns_timeout)


def cmd_dkim(args: argparse.Namespace) -> None:
    """``dkim rotate DOMAIN``, ``dkim activate DOMAIN GEN [--force]``, ``dkim list DOMAIN``."""
    from ..mailauth import keys

    d = require_data_dir(args)
    domain = args.domain.lower().rstrip(".")
    if args.action == "rotate":
        gen = keys.generate(d, domain)
        loaded = keys.load(d, domain, gen)
        assert loaded is not None
        print(f"; new DKIM keys for {domain}: publish these, then run: mailyard dkim activate {domain} {gen}")
        from ..mailauth.records import Record

        for rec in keys.records(loaded):
            print(Record(rec.name, "TXT", rec.text).zone_line())
    elif args.action == "activate":
        loaded = keys.load(d, domain, args.generation)
        if loaded is None:
            raise CLIError(f"{domain} has no DKIM key generation {args.generation!r} (see: mailyard dkim list {domain})")
        if not args.force:
            from ..mailauth.records import Record, check

            wanted = [Record(r.name, "TXT", r.text, "v=DKIM1") for r in keys.records(loaded)]
            bad = [(status, rec) for status, rec, _found in check(_auth_resolver(load_config(args)), wanted)
                   if status != "ok"]
            if bad:
                lines = "\n".join(f"  {status}: {rec.zone_line()}" for status, rec in bad)
                raise CLIError(f"the DKIM records of {args.generation} are not visible in DNS yet:\n{lines}\n"
                               "publish them and try again (or activate anyway with --force)")
        keys.set_active(d, domain, args.generation)
        print(f"{domain} now signs with {args.generation}-rsa and {args.generation}-ed25519")
    else:
        active = keys.active_generation(d, domain)
        for gen in keys.generations(d, domain):
            print(f"{gen}{'  (active)' if gen == active else ''}")


def cmd_dns(args: argparse.Namespace) -> None:
    """``dns DOMAIN`` prints the records to publish; ``dns check DOMAIN`` compares them with DNS."""
    from ..mailauth import keys
    from ..mailauth.records import check, needed

    words = args.words
    if len(words) == 2 and words[0] == "check":
        checking, domain = True, words[1]
    elif len(words) == 1:
        checking, domain = False, words[0]
    else:
        raise CLIError("usage: mailyard dns DOMAIN | mailyard dns check DOMAIN")
    d = require_data_dir(args)
    cfg = load_config(args)
    records = needed(cfg, domain, keys.load(d, domain), args.address or ())
    if not checking:
        print(f"; DNS records for {domain.lower()} (zone-file syntax)")
        for rec in records:
            print(rec.zone_line())
        return
    problems = 0
    for status, rec, found in check(_auth_resolver(cfg), records):
        print(f"{status:9} {rec.zone_line()}")
        if status == "different":
            for f in found:
                print(f"          (DNS has: {f})")
        problems += status != "ok"
    if problems:
        raise CLIError(f"{problems} record(s) of {domain.lower()} missing or different")


def add_dkim_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("dkim", parents=[common], help="DKIM signing keys of a domain (RFC 6376)")
    ksub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = ksub.add_parser("rotate", parents=[common], help="make new keys (a new selector) and print their records")
    q.add_argument("domain")
    q = ksub.add_parser("activate", parents=[common], help="sign with a generation once DNS publishes its keys")
    q.add_argument("domain")
    q.add_argument("generation", help="as printed by rotate, e.g. my20261205")
    q.add_argument("--force", action="store_true", help="switch even if DNS does not show the keys yet")
    q = ksub.add_parser("list", parents=[common], help="the key generations of a domain")
    q.add_argument("domain")
    p.set_defaults(func=cmd_dkim)


def add_dns_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("dns", parents=[common],
                       help="print the DNS records a domain needs (dns DOMAIN), or check them (dns check DOMAIN)")
    p.add_argument("words", nargs="+", metavar="[check] DOMAIN")
    p.add_argument("--address", action="append", help="a public address of this server, for SPF (repeatable)")
    p.set_defaults(func=cmd_dns)
