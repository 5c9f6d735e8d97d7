"""COMPRESS (RFC 4978 3) in the sans-I/O layer: the answers, and the switch
signalled to the I/O side (which does the deflating: net/imap.py)."""

from __future__ import annotations

from .helpers import connect


def test_compress_ok_then_compression_active() -> None:
    c = connect()
    c.expect("a1 COMPRESS DEFLATE", "a1 OK DEFLATE active")
    assert c.conv.compression_active
    c.expect("a2 COMPRESS DEFLATE", "a2 NO [COMPRESSIONACTIVE] DEFLATE is already active")


def test_compress_unknown_mechanism_is_bad() -> None:
    c = connect()
    c.expect("a1 COMPRESS LZW", "a1 BAD Unknown compression mechanism")
    c.expect("a2 COMPRESS", "a2 BAD Syntax error: expected SP")
    assert not c.conv.compression_active


def test_compress_needs_login() -> None:
    c = connect(user=None)
    c.expect("a1 COMPRESS DEFLATE", "a1 BAD COMPRESS is not valid in the not authenticated state")


def test_compress_with_pipelined_clear_text_is_refused() -> None:
    # RFC 4978 3: the client waits for the result; clear text after it
    # cannot be told apart from DEFLATE data
    c = connect()
    c.expect("a1 COMPRESS DEFLATE\r\na2 NOOP",
             "a1 BAD Commands were sent after COMPRESS before its result", "a2 OK NOOP completed")
    assert not c.conv.compression_active
