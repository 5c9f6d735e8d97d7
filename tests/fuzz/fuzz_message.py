#!/usr/bin/env python3
"""atheris target: the message layer (message/parse.py, message/derived.py):
parse, derive ENVELOPE / BODYSTRUCTURE / part offsets, serialise them in IMAP
syntax and fetch every part. The stdlib ``email`` package is instrumented too,
since the parse runs through it. See harness.run_message."""

from __future__ import annotations

if __name__ == "__main__":
    from fuzz_common import main

    main(
        "message",
        ["mailyard.message.parse", "mailyard.message.derived", "mailyard.message.address",
         "mailyard.protocols.imap.fetch", "mailyard.protocols.imap.response"],
        include=("mailyard", "email"),
    )
