#!/usr/bin/env python3
"""atheris target: the SMTP server engine (protocols/smtp) fed arbitrary bytes
in arbitrary chunks, from every start state (greeting, EHLO, MAIL, RCPT,
DATA, AUTH), with a fake glue answering its events. See harness.run_smtp."""

from __future__ import annotations

if __name__ == "__main__":
    from fuzz_common import main

    main("smtp", ["mailyard.protocols.smtp", "mailyard.protocols.smtp.server"])
