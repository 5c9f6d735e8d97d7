"""``mailyard tls status``: the certificate in use, the names it covers,
its issuer and expiry, and the last ACME order."""

from __future__ import annotations

import argparse
from typing import Any

from .common import CLIError, load_config, require_data_dir, run_with_store


def cmd_tls(args: argparse.Namespace) -> None:
    """``tls status``: each name of the certificate in use, its issuer and expiry."""
    import datetime
    import json

    from ..net.acme import STATUS_FILE, cert_info, default_names
    from ..server import certificate_paths

    d = require_data_dir(args)
    cfg = load_config(args)
    cert, _key = certificate_paths(d, cfg)
    try:
        info = cert_info(cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read the certificate {cert}: {exc}") from exc
    now = datetime.datetime.now(datetime.UTC)
    days = (info.not_after - now).days
    expires = f"{info.not_after:%Y-%m-%d %H:%M} UTC ({days} days)"
    issuer = info.issuer + (" (self-signed)" if info.self_signed else "")
    source = "acme " + cfg.tls.acme_directory if cfg.tls.acme and not cfg.tls.cert else "file"
    print(f"certificate {cert} ({source})")
    names = list(info.names)
    missing: list[str] = []
    if cfg.tls.acme and not cfg.tls.cert:
        wanted = [n.lower() for n in cfg.tls.acme_names] or default_names(
            cfg.server.hostname, run_with_store(args, lambda store: store.list_domains()))
        missing = [n for n in wanted if n not in {x.lower() for x in names}]
    width = max([len(n) for n in names + missing] + [4])
    print(f"{'NAME':<{width}}  {'ISSUER':<40}  EXPIRES")
    for name in names:
        print(f"{name:<{width}}  {issuer:<40}  {expires}")
    for name in missing:
        print(f"{name:<{width}}  {'(not covered yet)':<40}  -")
    status_file = cert.parent / STATUS_FILE
    if cfg.tls.acme and status_file.exists():
        status = json.loads(status_file.read_text())
        print(f"last ACME order {status['last_attempt']}: {status['last_error'] or 'ok'};"
              f" next check {status['next_attempt']}")


def add_tls_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tls", parents=[common], help="the TLS certificate in use (tls status)")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    tsub.add_parser("status", parents=[common], help="each name of the certificate, its issuer and expiry")
    p.set_defaults(func=cmd_tls)
