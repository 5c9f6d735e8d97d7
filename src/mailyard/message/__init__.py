"""The message layer: RFC 5322 + MIME on top of the stdlib ``email`` package.

Modules (import them directly; nothing is re-exported here so importing the
package stays cheap):

- ``parse``: ``parse_message``, ``split_header_body``, ``header_end``
- ``address``: address lists and groups, ``format_address``, ``split_address``,
  ``canonical_address``, ``is_valid_addr_spec``
- ``dates``: ``format_date``, ``parse_date``, ``to_timestamp``
- ``msgid``: ``make_msgid``
- ``trace``: ``received_header``, ``return_path_header``, ``delivered_to_header``
- ``compose``: ``compose``, ``to_bytes``, ``delivery_status_part``
- ``headers``: RFC 2047 decoding and header-field helpers
- ``derived``: ``derive`` -- ENVELOPE, BODYSTRUCTURE, part offsets, search text
- ``imap_syntax``: ENVELOPE and BODYSTRUCTURE written in IMAP syntax, once at delivery
- ``reading``: what a reader sees -- ``body_text`` (charset fallback),
  ``html_to_text``, ``header_text``, ``mailboxes``, attachment names and
  bytes, ``safe_filename``, ``human_size``
- ``reply``: answering -- ``build_reply`` (recipients, threading fields,
  subject, quote), ``forward_subject``, ``inline_forward``, ``forward_attachment``
"""
