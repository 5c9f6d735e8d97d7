#!/usr/bin/env python3
"""atheris target: the POP3 server engine (protocols/pop3) in AUTHORIZATION
and TRANSACTION, with a fake maildrop answering its events. See harness.run_pop3."""

from __future__ import annotations

if __name__ == "__main__":
    from fuzz_common import main

    main("pop3", ["mailyard.protocols.pop3.engine"])
