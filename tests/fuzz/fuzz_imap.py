#!/usr/bin/env python3
"""atheris target: the IMAP engine (framing with literals, command parser,
state machine) in not-authenticated, authenticated and selected states, with
a fake store answering its commands through the protocol helpers (sequence
map, SEARCH evaluation, FETCH sections, LIST patterns). See harness.run_imap."""

from __future__ import annotations

if __name__ == "__main__":
    from fuzz_common import main

    main("imap", [
        "mailyard.protocols.imap",
        "mailyard.protocols.imap.engine",
        "mailyard.protocols.imap.fetch",
        "mailyard.protocols.imap.search",
        "mailyard.protocols.imap.selected",
        "mailyard.protocols.imap.names",
    ])
