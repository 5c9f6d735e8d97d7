"""Mail authentication: DKIM signing and verification (RFC 6376, RFC 8463),
SPF (RFC 7208), DMARC (RFC 7489) and the Authentication-Results field (RFC
8601).

Each mechanism is a module that takes a message and DNS answers and returns
a verdict; DNS comes through an injected resolver (``dnscache.Resolver``), so
the checks are tested against a DNS server on loopback and never do I/O of
their own. The layer sits beside ``policy/``: ``delivery/`` calls it to sign
what the outbound queue sends, ``net/smtp.py`` to check what the MX port
receives. It imports only ``config`` and ``message``.
"""
