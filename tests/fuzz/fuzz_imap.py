#!/usr/bin/env python3
"""atheris target: the IMAP layer -- engine (framing with literals, command
parser, state machine) and command semantics (FETCH, STORE, SEARCH, LIST,
the untagged updates of the selected mailbox) -- in not-authenticated,
authenticated and selected states, over the in-memory backend, with another
session changing the mailbox meanwhile. See harness.run_imap."""

from __future__ import annotations

if __name__ == "__main__":
    from fuzz_common import main

    main("imap", [
        "mailyard.protocols.imap",
        "mailyard.protocols.imap.engine",
        "mailyard.protocols.imap.session",
        "mailyard.protocols.imap.handlers",
        "mailyard.protocols.imap.memory",
        "mailyard.protocols.imap.fetch",
        "mailyard.protocols.imap.fetch_plan",
        "mailyard.protocols.imap.flags",
        "mailyard.protocols.imap.search",
        "mailyard.protocols.imap.selected",
        "mailyard.protocols.imap.names",
    ])
