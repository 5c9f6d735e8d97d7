"""Table-driven Sieve cases: script x message x envelope -> the actions
(``Result.describe()``), through the sans-I/O interpreter (sieve/).

Each row is (id, script, message key, envelope, expected actions). The
messages are small fixed texts below; the scripts cover the base language
(RFC 5228), each extension built, and the RFCs' own examples.
"""

from __future__ import annotations

import pytest

from mailyard.sieve import Envelope, Limits, SpamVerdict, compile_script, run

MESSAGES = {
    "plain": (
        b"From: Carol Example <carol@remote.test>\r\n"
        b"To: alice@example.test, \"Bob\" <bob+work@example.test>\r\n"
        b"Cc: team@lists.example.test\r\n"
        b"Subject: Quarterly Report\r\n"
        b"Date: Tue, 1 Dec 2026 10:00:00 +0000\r\n"
        b"Message-ID: <plain@remote.test>\r\n"
        b"X-Spam-Score: 12\r\n"
        b"\r\n"
        b"The numbers are in. Money money money.\r\n"
    ),
    "list": (
        b"From: owner-team@lists.example.test\r\n"
        b"To: team@lists.example.test\r\n"
        b"Subject: [team] meeting moved\r\n"
        b"List-Id: Team <team.lists.example.test>\r\n"
        b"Precedence: list\r\n"
        b"\r\n"
        b"Room 4.\r\n"
    ),
    "encoded": (
        b"From: =?utf-8?q?J=C3=BCrgen?= <juergen@remote.test>\r\n"
        b"To: alice@example.test\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\n"
        b"X-Folded: first\r\n second\r\n"
        b"\r\n"
        b"hallo\r\n"
    ),
    "mime": (
        b"From: shop@store.test\r\n"
        b"To: alice+orders@example.test\r\n"
        b"Subject: Your order\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/alternative; boundary=\"b1\"\r\n"
        b"\r\n"
        b"--b1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"Order n=C2=B0 42 shipped\r\n"
        b"--b1\r\n"
        b"Content-Type: text/html\r\n"
        b"\r\n"
        b"<p>Order <b>42</b> shipped</p>\r\n"
        b"--b1--\r\n"
    ),
    "bare": b"Subject: no from\r\n\r\nx\r\n",
}

ENV = Envelope("carol@remote.test", "alice@example.test")
ENV_DETAIL = Envelope("shop@store.test", "alice+orders@example.test")
ENV_NULL = Envelope("", "alice@example.test")

R = 'require ["fileinto", "mailbox", "envelope", "imap4flags", "variables", "relational", "subaddress", ' \
    '"body", "copy", "reject", "ereject", "vacation", "encoded-character", "comparator-i;ascii-numeric"];\n'

KEEP = ["keep"]

CASES: list[tuple[str, str, str, Envelope, list[str]]] = [
    # --- the implicit keep and the basic actions (RFC 5228 2.10, 4) ---
    ("empty", "", "plain", ENV, KEEP),
    ("comment-only", "# nothing\n/* at all */\n", "plain", ENV, KEEP),
    ("keep", "keep;", "plain", ENV, KEEP),
    ("discard", "discard;", "plain", ENV, ["discard"]),
    ("stop", "stop; discard;", "plain", ENV, KEEP),
    ("keep-discard", "keep; discard;", "plain", ENV, ["keep", "discard"]),
    ("fileinto", R + 'fileinto "Work";', "plain", ENV, ["fileinto 'Work'"]),
    ("fileinto-twice", R + 'fileinto "Work"; fileinto "Work";', "plain", ENV, ["fileinto 'Work'"]),
    ("fileinto-two", R + 'fileinto "A"; fileinto "B";', "plain", ENV, ["fileinto 'A'", "fileinto 'B'"]),
    ("fileinto-inbox-keep", R + 'fileinto "INBOX"; keep;', "plain", ENV, ["fileinto 'INBOX'"]),
    ("fileinto-create", R + 'fileinto :create "New/Box";', "plain", ENV, ["fileinto 'New/Box' :create"]),
    ("fileinto-copy", R + 'fileinto :copy "Archive";', "plain", ENV, ["fileinto 'Archive'", "keep"]),
    ("redirect", 'redirect "bob@example.test";', "plain", ENV, ["redirect 'bob@example.test'"]),
    ("redirect-copy", R + 'redirect :copy "bob@example.test";', "plain", ENV,
     ["redirect 'bob@example.test' :copy", "keep"]),
    ("redirect-twice", 'redirect "b@x.test"; redirect "B@X.test";', "plain", ENV, ["redirect 'b@x.test'"]),
    ("redirect-angle", 'redirect "<b@x.test>";', "plain", ENV, ["redirect 'b@x.test'"]),
    ("reject", R + 'reject "no thanks";', "plain", ENV, ["reject 'no thanks'"]),
    ("ereject", R + 'ereject "go away";', "plain", ENV, ["ereject 'go away'"]),
    # --- if / elsif / else (RFC 5228 3.1) ---
    ("if-true", "if true { discard; }", "plain", ENV, ["discard"]),
    ("if-false", "if false { discard; }", "plain", ENV, KEEP),
    ("else", R + 'if false { discard; } else { fileinto "E"; }', "plain", ENV, ["fileinto 'E'"]),
    ("elsif", R + 'if false { discard; } elsif true { fileinto "B"; } else { fileinto "C"; }', "plain", ENV,
     ["fileinto 'B'"]),
    ("elsif-chain-first", R + 'if true { fileinto "A"; } elsif true { fileinto "B"; }', "plain", ENV,
     ["fileinto 'A'"]),
    ("nested", R + 'if true { if false { discard; } else { fileinto "N"; } }', "plain", ENV, ["fileinto 'N'"]),
    ("not", "if not false { discard; }", "plain", ENV, ["discard"]),
    ("allof-true", "if allof (true, true) { discard; }", "plain", ENV, ["discard"]),
    ("allof-false", "if allof (true, false) { discard; }", "plain", ENV, KEEP),
    ("anyof-true", "if anyof (false, true) { discard; }", "plain", ENV, ["discard"]),
    ("anyof-false", "if anyof (false, false) { discard; }", "plain", ENV, KEEP),
    ("not-allof", "if not allof (true, false) { discard; }", "plain", ENV, ["discard"]),
    ("stop-in-block", R + 'if true { fileinto "A"; stop; } fileinto "B";', "plain", ENV, ["fileinto 'A'"]),
    # --- header (RFC 5228 5.7) with match types and comparators ---
    ("header-is", 'if header :is "subject" "Quarterly Report" { discard; }', "plain", ENV, ["discard"]),
    ("header-is-case", 'if header :is "Subject" "quarterly report" { discard; }', "plain", ENV, ["discard"]),
    ("header-is-octet", 'if header :is :comparator "i;octet" "subject" "quarterly report" { discard; }',
     "plain", ENV, KEEP),
    ("header-is-octet-exact", 'if header :comparator "i;octet" :is "subject" "Quarterly Report" { discard; }',
     "plain", ENV, ["discard"]),
    ("header-default-is", 'if header "subject" "Quarterly" { discard; }', "plain", ENV, KEEP),
    ("header-contains", 'if header :contains "subject" "report" { discard; }', "plain", ENV, ["discard"]),
    ("header-contains-no", 'if header :contains "subject" "invoice" { discard; }', "plain", ENV, KEEP),
    ("header-contains-list", 'if header :contains ["to", "cc"] "lists.example" { discard; }', "plain", ENV,
     ["discard"]),
    ("header-contains-keys", 'if header :contains "subject" ["x", "port"] { discard; }', "plain", ENV,
     ["discard"]),
    ("header-contains-empty", 'if header :contains "subject" "" { discard; }', "plain", ENV, ["discard"]),
    ("header-missing", 'if header :contains "x-nope" "" { discard; }', "plain", ENV, KEEP),
    ("header-matches-star", 'if header :matches "subject" "*report" { discard; }', "plain", ENV, ["discard"]),
    ("header-matches-q", 'if header :matches "subject" "Quarterl? Report" { discard; }', "plain", ENV,
     ["discard"]),
    ("header-matches-no", 'if header :matches "subject" "report*" { discard; }', "plain", ENV, KEEP),
    ("header-matches-all", 'if header :matches "subject" "*" { discard; }', "plain", ENV, ["discard"]),
    ("header-matches-escape", 'if header :matches "subject" "Quarterly\\\\*" { discard; }', "plain", ENV, KEEP),
    ("header-matches-many", 'if header :matches "subject" "*a*e*y*R*t" { discard; }', "plain", ENV, ["discard"]),
    ("header-encoded-word", 'if header :is "subject" "Grüße aus Köln" { discard; }', "encoded", ENV,
     ["discard"]),
    ("header-encoded-contains", 'if header :contains "subject" "KÖLN" { discard; }', "encoded", ENV, KEEP),
    ("header-encoded-octet", 'if header :contains "subject" "Köln" { discard; }', "encoded", ENV, ["discard"]),
    ("header-unfolded", 'if header :is "x-folded" "first second" { discard; }', "encoded", ENV, ["discard"]),
    ("header-numeric", R + 'if header :is :comparator "i;ascii-numeric" "x-spam-score" "012" { discard; }',
     "plain", ENV, ["discard"]),
    ("header-numeric-contains", R + 'if header :contains :comparator "i;ascii-numeric" "x-spam-score" "1"'
     ' { discard; }', "plain", ENV, KEEP),
    # --- address (RFC 5228 5.1) ---
    ("address-all", 'if address :is "from" "carol@remote.test" { discard; }', "plain", ENV, ["discard"]),
    ("address-all-case", 'if address :is "from" "CAROL@remote.TEST" { discard; }', "plain", ENV, ["discard"]),
    ("address-localpart", 'if address :localpart :is "from" "carol" { discard; }', "plain", ENV, ["discard"]),
    ("address-domain", 'if address :domain :is "from" "remote.test" { discard; }', "plain", ENV, ["discard"]),
    ("address-domain-no", 'if address :domain :is "from" "example.test" { discard; }', "plain", ENV, KEEP),
    ("address-displayname-ignored", 'if address :contains "from" "Example" { discard; }', "plain", ENV, KEEP),
    ("address-to-list", 'if address :is "to" "bob+work@example.test" { discard; }', "plain", ENV, ["discard"]),
    ("address-multi-headers", 'if address :domain :is ["to", "cc"] "lists.example.test" { discard; }', "plain",
     ENV, ["discard"]),
    ("address-matches", 'if address :matches "from" "*@remote.*" { discard; }', "plain", ENV, ["discard"]),
    ("address-user", R + 'if address :user :is "to" "bob" { discard; }', "plain", ENV, ["discard"]),
    ("address-detail", R + 'if address :detail :is "to" "work" { discard; }', "plain", ENV, ["discard"]),
    ("address-detail-none", R + 'if address :detail :is "from" "" { discard; }', "plain", ENV, KEEP),
    ("address-missing", 'if address :is "sender" "x@y" { discard; }', "plain", ENV, KEEP),
    ("address-encoded-name", 'if address :is "from" "juergen@remote.test" { discard; }', "encoded", ENV,
     ["discard"]),
    ("address-count", R + 'if address :count "eq" :comparator "i;ascii-numeric" "to" "2" { discard; }', "plain",
     ENV, ["discard"]),
    ("address-count-gt", R + 'if address :count "gt" :comparator "i;ascii-numeric" ["to", "cc"] "2" '
     '{ discard; }', "plain", ENV, ["discard"]),
    # --- envelope (RFC 5228 5.4) ---
    ("envelope-from", R + 'if envelope :is "from" "carol@remote.test" { discard; }', "plain", ENV, ["discard"]),
    ("envelope-to", R + 'if envelope :is "to" "alice@example.test" { discard; }', "plain", ENV, ["discard"]),
    ("envelope-domain", R + 'if envelope :domain :is "from" "remote.test" { discard; }', "plain", ENV,
     ["discard"]),
    ("envelope-null", R + 'if envelope :is "from" "" { discard; }', "plain", ENV_NULL, ["discard"]),
    ("envelope-null-localpart", R + 'if envelope :localpart :is "from" "" { discard; }', "plain", ENV_NULL,
     ["discard"]),
    ("envelope-detail", R + 'if envelope :detail :is "to" "orders" { discard; }', "mime", ENV_DETAIL,
     ["discard"]),
    ("envelope-user", R + 'if envelope :user :is "to" "alice" { discard; }', "mime", ENV_DETAIL, ["discard"]),
    ("envelope-detail-absent", R + 'if envelope :detail :matches "to" "*" { discard; }', "plain", ENV, KEEP),
    ("envelope-to-all-detail", R + 'if envelope :is "to" "alice+orders@example.test" { discard; }', "mime",
     ENV_DETAIL, ["discard"]),
    # --- exists, size (RFC 5228 5.5, 5.9) ---
    ("exists", 'if exists "subject" { discard; }', "plain", ENV, ["discard"]),
    ("exists-all", 'if exists ["from", "subject"] { discard; }', "plain", ENV, ["discard"]),
    ("exists-not-all", 'if exists ["from", "x-nope"] { discard; }', "plain", ENV, KEEP),
    ("exists-no-from", 'if not exists "from" { discard; }', "bare", ENV, ["discard"]),
    ("size-over", "if size :over 100 { discard; }", "plain", ENV, ["discard"]),
    ("size-over-no", "if size :over 1K { discard; }", "plain", ENV, KEEP),
    ("size-under", "if size :under 1K { discard; }", "plain", ENV, ["discard"]),
    ("size-under-no", "if size :under 10 { discard; }", "plain", ENV, KEEP),
    ("size-M", "if size :over 1M { discard; }", "plain", ENV, KEEP),
    # --- imap4flags (RFC 5232) ---
    ("setflag-keep", R + 'setflag "\\\\Seen"; keep;', "plain", ENV, ["keep flags=\\Seen"]),
    ("addflag-implicit", R + 'addflag "\\\\Flagged";', "plain", ENV, ["keep flags=\\Flagged"]),
    ("addflag-two", R + 'addflag "\\\\Seen"; addflag ["work", "\\\\Seen"];', "plain", ENV,
     ["keep flags=\\Seen work"]),
    ("addflag-space", R + 'addflag "a b";', "plain", ENV, ["keep flags=a b"]),
    ("removeflag", R + 'addflag ["a", "b"]; removeflag "a";', "plain", ENV, ["keep flags=b"]),
    ("removeflag-system-case", R + 'addflag "\\\\Seen"; removeflag "\\\\seen";', "plain", ENV, KEEP),
    ("setflag-replace", R + 'addflag "a"; setflag "b";', "plain", ENV, ["keep flags=b"]),
    ("fileinto-flags", R + 'fileinto :flags "\\\\Seen" "Read";', "plain", ENV, ["fileinto 'Read' flags=\\Seen"]),
    ("fileinto-current-flags", R + 'addflag "x"; fileinto "F";', "plain", ENV, ["fileinto 'F' flags=x"]),
    ("keep-flags-tag", R + 'addflag "x"; keep :flags "y";', "plain", ENV, ["keep flags=y"]),
    ("hasflag", R + 'addflag "work"; if hasflag "work" { discard; }', "plain", ENV, ["discard"]),
    ("hasflag-no", R + 'if hasflag "work" { discard; }', "plain", ENV, KEEP),
    ("hasflag-var", R + 'set "f" ""; addflag "f" "red"; if hasflag "f" "red" { discard; }', "plain", ENV,
     ["discard"]),
    ("flags-var-not-internal", R + 'set "f" ""; addflag "f" "red";', "plain", ENV, KEEP),
    ("hasflag-count", R + 'addflag ["a", "b"]; if hasflag :count "eq" :comparator "i;ascii-numeric" "2"'
     ' { discard; }', "plain", ENV, ["discard"]),
    # --- variables (RFC 5229) ---
    ("set-expand", R + 'set "box" "Lists"; fileinto "${box}";', "plain", ENV, ["fileinto 'Lists'"]),
    ("set-case-insensitive-name", R + 'set "Box" "L"; fileinto "${box}";', "plain", ENV, ["fileinto 'L'"]),
    ("unknown-var-empty", R + 'fileinto "a${nope}b";', "plain", ENV, ["fileinto 'ab'"]),
    ("matches-capture", R + 'if header :matches "subject" "* Report" { fileinto "r/${1}"; }', "plain", ENV,
     ["fileinto 'r/Quarterly'"]),
    ("matches-capture-0", R + 'if header :matches "subject" "*" { fileinto "${0}"; }', "plain", ENV,
     ["fileinto 'Quarterly Report'"]),
    ("matches-capture-list", R + 'if header :matches "subject" "[*] *" { fileinto "lists/${1}"; }', "list",
     ENV, ["fileinto 'lists/team'"]),
    ("matches-capture-q", R + 'if header :matches "subject" "?uarterly*" { fileinto "${1}-${2}"; }', "plain",
     ENV, ["fileinto 'Q- Report'"]),
    ("matches-capture-address", R + 'if address :matches "from" "*@*" { fileinto "from/${2}/${1}"; }',
     "plain", ENV, ["fileinto 'from/remote.test/carol'"]),
    ("matches-shortest", R + 'if header :matches "subject" "*r*" { fileinto "${1}|${2}"; }', "plain", ENV,
     ["fileinto 'Qua|terly Report'"]),
    ("set-lower", R + 'set :lower "x" "HeLLo"; fileinto "${x}";', "plain", ENV, ["fileinto 'hello'"]),
    ("set-upper", R + 'set :upper "x" "HeLLo"; fileinto "${x}";', "plain", ENV, ["fileinto 'HELLO'"]),
    ("set-upperfirst", R + 'set :upperfirst "x" "hello"; fileinto "${x}";', "plain", ENV, ["fileinto 'Hello'"]),
    ("set-lowerfirst-upper", R + 'set :lowerfirst :upper "x" "hello"; fileinto "${x}";', "plain", ENV,
     ["fileinto 'hELLO'"]),
    ("set-length", R + 'set :length "x" "hello"; fileinto "${x}";', "plain", ENV, ["fileinto '5'"]),
    ("set-quotewildcard", R + 'set :quotewildcard "x" "a*b?"; fileinto "${x}";', "plain", ENV,
     ["fileinto 'a\\\\*b\\\\?'"]),
    ("string-is", R + 'set "a" "x"; if string :is "${a}" "x" { discard; }', "plain", ENV, ["discard"]),
    ("string-empty", R + 'if string :is "${nothing}" "" { discard; }', "plain", ENV, ["discard"]),
    ("string-count-skips-empty", R + 'if string :count "eq" :comparator "i;ascii-numeric" ["a", "", "b"] "2"'
     ' { discard; }', "plain", ENV, ["discard"]),
    ("var-in-key", R + 'set "k" "Report"; if header :contains "subject" "${k}" { discard; }', "plain", ENV,
     ["discard"]),
    ("var-not-required", 'if header :is "subject" "${x}" { discard; }', "bare", ENV, KEEP),
    ("rfc5229-example", R + 'if header :matches "List-ID" "*<*@*" { fileinto "INBOX.lists.${2}"; stop; }',
     "list", ENV, KEEP),
    ("rfc5229-listid", R + 'if header :matches "List-ID" "*<*.*.*>" { fileinto "lists.${2}"; stop; }',
     "list", ENV, ["fileinto 'lists.team'"]),
    # --- relational (RFC 5231) ---
    ("value-gt", R + 'if header :value "gt" :comparator "i;ascii-numeric" "x-spam-score" "10" { discard; }',
     "plain", ENV, ["discard"]),
    ("value-lt", R + 'if header :value "lt" :comparator "i;ascii-numeric" "x-spam-score" "10" { discard; }',
     "plain", ENV, KEEP),
    ("value-ge-eq", R + 'if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "12" { discard; }',
     "plain", ENV, ["discard"]),
    ("value-ne", R + 'if header :value "ne" :comparator "i;ascii-numeric" "x-spam-score" "12" { discard; }',
     "plain", ENV, KEEP),
    ("value-string-order", R + 'if header :value "lt" "subject" "R" { discard; }', "plain", ENV, ["discard"]),
    ("value-casemap", R + 'if header :value "eq" "subject" "QUARTERLY REPORT" { discard; }', "plain", ENV,
     ["discard"]),
    ("count-headers", R + 'if header :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] "2" { discard; }',
     "plain", ENV, ["discard"]),
    ("count-zero", R + 'if header :count "eq" :comparator "i;ascii-numeric" "x-nope" "0" { discard; }',
     "plain", ENV, ["discard"]),
    ("numeric-inf", R + 'if header :value "gt" :comparator "i;ascii-numeric" "subject" "99999" { discard; }',
     "plain", ENV, ["discard"]),
    # --- body (RFC 5173) ---
    ("body-contains", R + 'if body :contains "money" { discard; }', "plain", ENV, ["discard"]),
    ("body-contains-no", R + 'if body :contains "invoice" { discard; }', "plain", ENV, KEEP),
    ("body-text-decoded", R + 'if body :text :contains "n° 42" { discard; }', "mime", ENV, ["discard"]),
    ("body-raw", R + 'if body :raw :contains "n=C2=B0" { discard; }', "mime", ENV, ["discard"]),
    ("body-raw-not-decoded", R + 'if body :raw :contains "n° 42" { discard; }', "mime", ENV, KEEP),
    ("body-content-html", R + 'if body :content "text/html" :contains "<b>42</b>" { discard; }', "mime", ENV,
     ["discard"]),
    ("body-content-plain-not-html", R + 'if body :content "text/plain" :contains "<b>" { discard; }', "mime",
     ENV, KEEP),
    ("body-content-type", R + 'if body :content "text" :contains "<p>" { discard; }', "mime", ENV, ["discard"]),
    ("body-matches", R + 'if body :matches "*money money*" { discard; }', "plain", ENV, ["discard"]),
    # --- mailbox (RFC 5490) ---
    ("mailboxexists", R + 'if mailboxexists "Work" { fileinto "Work"; }', "plain", ENV, ["fileinto 'Work'"]),
    ("mailboxexists-no", R + 'if mailboxexists "Nope" { fileinto "Nope"; }', "plain", ENV, KEEP),
    # --- encoded-character (RFC 5228 2.4.2.4) ---
    ("encoded-hex", R + 'fileinto "${hex:42 6f 78}";', "plain", ENV, ["fileinto 'Box'"]),
    ("encoded-unicode", R + 'fileinto "${unicode:4b 00f6 6c 6e}";', "plain", ENV, ["fileinto 'Köln'"]),
    ("encoded-bad-left", R + 'fileinto "${hex:zz}";', "plain", ENV, ["fileinto '${hex:zz}'"]),
    ("encoded-not-required", 'require "fileinto"; fileinto "${hex:42}";', "plain", ENV,
     ["fileinto '${hex:42}'"]),
    # --- vacation (RFC 5230) ---
    ("vacation", R + 'vacation "away";', "plain", ENV, ["vacation days=7 subject=None handle='away\\x00\\x00\\x00'",
                                                        "keep"]),
    ("vacation-days", R + 'vacation :days 1 :subject "Out" :handle "h" "away";', "plain", ENV,
     ["vacation days=1 subject='Out' handle='h'", "keep"]),
    ("vacation-days-min", R + 'vacation :days 0 :handle "h" "away";', "plain", ENV,
     ["vacation days=0 subject=None handle='h'", "keep"]),
    ("vacation-days-max", R + 'vacation :days 1000 :handle "h" "away";', "plain", ENV,
     ["vacation days=90 subject=None handle='h'", "keep"]),
    ("vacation-discard", R + 'vacation :handle "h" "away"; discard;', "plain", ENV,
     ["vacation days=7 subject=None handle='h'", "discard"]),
    ("vacation-var-subject", R + 'if header :matches "subject" "*" { vacation :handle "h" :subject "Re: ${1}" '
     '"away"; }', "plain", ENV, ["vacation days=7 subject='Re: Quarterly Report' handle='h'", "keep"]),
    # --- strings and lexing (RFC 5228 2.4) ---
    ("text-block", R + 'fileinto text:\nMulti\n.\n;', "plain", ENV, ["fileinto 'Multi\\r\\n'"]),
    ("text-dotstuff", R + 'fileinto text:  # comment\n..dot\n.\n;', "plain", ENV, ["fileinto '.dot\\r\\n'"]),
    ("string-escapes", R + 'fileinto "a\\"b\\\\c\\d";', "plain", ENV, ["fileinto 'a\"b\\\\cd'"]),
    ("keywords-case", 'IF TRUE { DISCARD; }', "plain", ENV, ["discard"]),
    ("tags-case", 'if header :CONTAINS "subject" "report" { discard; }', "plain", ENV, ["discard"]),
    ("crlf-script", 'if true {\r\n  discard;\r\n}\r\n', "plain", ENV, ["discard"]),
    ("bracket-comment-inline", 'if /* c */ true { discard; }', "plain", ENV, ["discard"]),
    # --- RFC 5228 section 9 example (a typical script) ---
    ("rfc5228-9-spam", 'require "fileinto";\nif header :contains "from" "coyote" { discard; }\n'
     'elsif header :contains ["subject"] ["$$$"] { discard; }\n'
     'elsif anyof (not address :all :contains ["To", "Cc", "Bcc"] "me@example.com",\n'
     '             header :matches "subject" ["*make*money*fast*", "*university*dipl*mas*"]) {\n'
     '  fileinto "spam"; }\nelse { fileinto "personal"; }', "plain", ENV, ["fileinto 'spam'"]),
    ("rfc5228-9-personal", 'require "fileinto";\nif header :contains "from" "coyote" { discard; }\n'
     'elsif anyof (not address :all :contains ["To", "Cc", "Bcc"] "alice@example.test",\n'
     '             header :matches "subject" ["*make*money*fast*"]) { fileinto "spam"; }\n'
     'else { fileinto "personal"; }', "plain", ENV, ["fileinto 'personal'"]),
    # --- RFC 5232 example ---
    ("rfc5232-example", 'require ["imap4flags", "fileinto"];\nif header :contains "from" "carol" {\n'
     '  setflag "\\\\Deleted";\n  fileinto "Junk";\n}', "plain", ENV, ["fileinto 'Junk' flags=\\Deleted"]),
    # --- RFC 5233 example ---
    ("rfc5233-example", 'require ["envelope", "subaddress", "fileinto"];\n'
     'if envelope :user "to" "alice" { if envelope :detail "to" "orders" { fileinto "inbox.orders"; } }',
     "mime", ENV_DETAIL, ["fileinto 'inbox.orders'"]),
    # --- RFC 3894 example ---
    ("rfc3894-example", 'require ["copy", "fileinto"];\nfileinto :copy "incoming";\n', "plain", ENV,
     ["fileinto 'incoming'", "keep"]),
]


@pytest.mark.parametrize(("script", "msg", "env", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_table(script: str, msg: str, env: Envelope, expected: list[str]) -> None:
    compiled = compile_script(script)
    result = run(compiled, MESSAGES[msg], env, Limits(), mailbox_exists={"INBOX", "Work"}.__contains__)
    assert result.describe() == expected


def test_table_is_large() -> None:
    assert len(CASES) >= 150, len(CASES)


# --- date, currentdate and index (RFC 5260): a fixed clock, explicit zones ---

DATED = (b"Received: from a by b; Tue, 1 Dec 2026 23:30:00 -0500\r\n"
         b"Received: from c by d; Mon, 30 Nov 2026 08:00:00 +0000\r\n"
         b"Date: Tue, 1 Dec 2026 22:15:30 -0500\r\n"
         b"From: first@a.test\r\nFrom: second@b.test\r\nSubject: one\r\nSubject: two\r\n\r\nx\r\n")
NOW = 1_796_169_600.0  # 2026-12-02 00:00:00 UTC, a Wednesday
D = 'require ["date", "index", "relational", "variables", "fileinto", "vacation"];\n'

DATE_CASES: list[tuple[str, str, list[str]]] = [
    ("date-original-zone", D + 'if date :originalzone "date" "date" "2026-12-01" { discard; }', ["discard"]),
    ("date-utc", D + 'if date :zone "+0000" "date" "date" "2026-12-02" { discard; }', ["discard"]),
    ("date-hour-zone", D + 'if date :zone "+0100" "date" "hour" "04" { discard; }', ["discard"]),
    ("date-time", D + 'if date :originalzone "date" "time" "22:15:30" { discard; }', ["discard"]),
    ("date-zone-part", D + 'if date :originalzone "date" "zone" "-0500" { discard; }', ["discard"]),
    ("date-weekday", D + 'if date :originalzone "date" "weekday" "2" { discard; }', ["discard"]),
    ("date-julian", D + 'if date :zone "+0000" "date" "julian" "61376" { discard; }', ["discard"]),
    ("date-iso8601", D + 'if date :zone "+0000" "date" "iso8601" "2026-12-02T03:15:30+00:00" { discard; }',
     ["discard"]),
    ("date-year-value", D + 'if date :value "ge" :originalzone "date" "year" "2026" { discard; }', ["discard"]),
    ("date-matches-capture", D + 'if date :matches :originalzone "date" "date" "*-*-*" { fileinto "${1}/${2}"; }',
     ["fileinto '2026/12'"]),
    ("date-no-field", D + 'if date :zone "+0000" "x-nope" "year" "2026" { discard; }', ["keep"]),
    ("date-received", D + 'if date :zone "+0000" "received" "day" "02" { discard; }', ["discard"]),
    ("date-received-index-last", D + 'if date :index 1 :last :zone "+0000" "received" "day" "30" { discard; }',
     ["discard"]),
    ("date-received-index-first", D + 'if date :index 1 :zone "+0000" "received" "day" "30" { discard; }', ["keep"]),
    ("currentdate", D + 'if currentdate :zone "+0000" "date" "2026-12-02" { discard; }', ["discard"]),
    ("currentdate-range", D + 'if allof (currentdate :zone "+0000" :value "ge" "date" "2026-12-01",\n'
     '  currentdate :zone "+0000" :value "le" "date" "2026-12-10") { vacation :handle "h" "away"; }',
     ["vacation days=7 subject=None handle='h'", "keep"]),
    ("currentdate-out-of-range", D + 'if currentdate :zone "+0000" :value "lt" "date" "2026-12-01" { discard; }',
     ["keep"]),
    ("index-header", D + 'if header :index 2 "subject" "two" { discard; }', ["discard"]),
    ("index-header-first", D + 'if header :index 1 "subject" "two" { discard; }', ["keep"]),
    ("index-last", D + 'if header :index 1 :last "subject" "two" { discard; }', ["discard"]),
    ("index-beyond", D + 'if header :index 3 :contains "subject" "" { discard; }', ["keep"]),
    ("index-address", D + 'if address :index 2 :domain "from" "b.test" { discard; }', ["discard"]),
]


@pytest.mark.parametrize(("script", "expected"), [c[1:] for c in DATE_CASES], ids=[c[0] for c in DATE_CASES])
def test_date_and_index(script: str, expected: list[str]) -> None:
    assert run(compile_script(script), DATED, ENV, now=NOW).describe() == expected


# --- regex (draft-ietf-sieve-regex) ---

X = 'require ["regex", "variables", "fileinto"];\n'
REGEX_CASES: list[tuple[str, str, list[str]]] = [
    ("regex-search", X + 'if header :regex "subject" "port$" { discard; }', ["discard"]),
    ("regex-anchored-no", X + 'if header :regex "subject" "^Report" { discard; }', ["keep"]),
    ("regex-casemap", X + 'if header :regex "subject" "^quarterly" { discard; }', ["discard"]),
    ("regex-octet", X + 'if header :regex :comparator "i;octet" "subject" "^quarterly" { discard; }', ["keep"]),
    ("regex-class", X + 'if header :regex "x-spam-score" "^[0-9]{2,}$" { discard; }', ["discard"]),
    ("regex-captures", X + 'if address :regex "from" "^([a-z]+)@(.*)$" { fileinto "${2}/${1}"; }',
     ["fileinto 'remote.test/carol'"]),
    ("regex-alternation", X + 'if header :regex "subject" "invoice|report" { discard; }', ["discard"]),
    ("regex-quoteregex", X + 'set :quoteregex "q" "a.b"; if string :regex "axb" "${q}" { discard; }', ["keep"]),
    ("regex-quoteregex-match", X + 'set :quoteregex "q" "a.b"; if string :regex "a.b" "^${q}$" { discard; }',
     ["discard"]),
]


@pytest.mark.parametrize(("script", "expected"), [c[1:] for c in REGEX_CASES], ids=[c[0] for c in REGEX_CASES])
def test_regex(script: str, expected: list[str]) -> None:
    assert run(compile_script(script), MESSAGES["plain"], ENV).describe() == expected


def test_all_tables_hold_190_cases() -> None:
    assert len(CASES) + len(DATE_CASES) + len(REGEX_CASES) >= 190


# --- include (RFC 6609) ---

LIBRARY = {
    ("personal", "lists"): 'require ["fileinto", "include", "variables"];\n'
                           'global "box";\nif header :contains "subject" "[team]" { fileinto "${box}"; return; }\n'
                           'fileinto "not-reached-for-lists";',
    ("personal", "spam"): 'require ["fileinto"];\nif header :contains "x-spam-score" "12" { fileinto "Junk"; stop; }',
    ("global", "site"): 'require ["imap4flags"];\naddflag "site-checked";',
    ("personal", "loop"): 'require "include";\ninclude "loop";',
    ("personal", "local-vars"): 'require ["variables", "fileinto"];\nset "box" "local";\nfileinto "${box}";',
}
INC = 'require ["include", "variables", "fileinto"];\n'
INCLUDE_CASES: list[tuple[str, str, str, list[str]]] = [
    ("include-personal", INC + 'include "spam";', "plain", ["fileinto 'Junk'"]),
    ("include-stop-ends-all", INC + 'include "spam"; fileinto "after";', "plain", ["fileinto 'Junk'"]),
    ("include-global", INC + 'include :global "site"; keep;', "plain", ["keep flags=site-checked"]),
    ("include-global-var-return", INC + 'global "box"; set "box" "Lists/team";\ninclude "lists"; fileinto "after";',
     "list", ["fileinto 'Lists/team'", "fileinto 'after'"]),
    ("include-not-matching", INC + 'global "box"; set "box" "L"; include "lists";', "plain",
     ["fileinto 'not-reached-for-lists'"]),
    ("include-local-vars-private", INC + 'set "box" "mine"; include "local-vars"; fileinto "${box}";', "plain",
     ["fileinto 'local'", "fileinto 'mine'"]),
    ("include-global-namespace", INC + 'global "box"; set "box" "G"; fileinto "${global.box}";', "plain",
     ["fileinto 'G'"]),
    ("include-once", INC + 'include :once :global "site"; include :once :global "site"; keep;', "plain",
     ["keep flags=site-checked"]),
    ("include-optional-missing", INC + 'include :optional "nope"; fileinto "x";', "plain", ["fileinto 'x'"]),
    ("return-top-level", INC + 'return; fileinto "x";', "plain", ["keep"]),
]


@pytest.mark.parametrize(("script", "msg", "expected"), [c[1:] for c in INCLUDE_CASES],
                         ids=[c[0] for c in INCLUDE_CASES])
def test_include(script: str, msg: str, expected: list[str]) -> None:
    def load(location: str, name: str):
        text = LIBRARY.get((location, name))
        return compile_script(text) if text is not None else None

    assert run(compile_script(script), MESSAGES[msg], ENV, include=load).describe() == expected


@pytest.mark.parametrize(("script", "error"), [
    (INC + 'include "loop";', "includes nested deeper than 8"),
    (INC + 'include "nope";', "include: no personal script 'nope'"),
])
def test_include_errors(script: str, error: str) -> None:
    from mailyard.sieve import SieveRuntimeError

    def load(location: str, name: str):
        text = LIBRARY.get((location, name))
        return compile_script(text) if text is not None else None

    with pytest.raises(SieveRuntimeError, match=error):
        run(compile_script(script), MESSAGES["plain"], ENV, include=load)


# --- duplicate (RFC 7352) ---

DUP = 'require ["duplicate", "fileinto", "variables"];\n'


@pytest.mark.parametrize(("script", "seen", "expected", "marks"), [
    (DUP + 'if duplicate { discard; }', set(), ["keep"], [("", "plain@remote.test", 604800, False)]),
    (DUP + 'if duplicate { discard; }', {("", "plain@remote.test")}, ["discard"], []),
    (DUP + 'if duplicate :last { discard; }', {("", "plain@remote.test")}, ["discard"],
     [("", "plain@remote.test", 604800, True)]),
    (DUP + 'if duplicate :handle "h" :seconds 60 { discard; }', {("", "plain@remote.test")}, ["keep"],
     [("h", "plain@remote.test", 60, False)]),
    (DUP + 'if duplicate :header "subject" { discard; }', set(), ["keep"],
     [("", "Quarterly Report", 604800, False)]),
    (DUP + 'if duplicate :header "x-nope" { discard; }', set(), ["keep"], []),
    (DUP + 'if header :matches "subject" "*" { if duplicate :uniqueid "${1}" { discard; } }',
     {("", "Quarterly Report")}, ["discard"], []),
    # the same id twice in one run: the second is a duplicate of the first
    (DUP + 'if duplicate { fileinto "a"; } if duplicate { fileinto "b"; }', set(), ["fileinto 'b'"],
     [("", "plain@remote.test", 604800, False)]),
], ids=["first", "seen", "seen-last-refreshes", "other-handle", "header", "no-header", "uniqueid", "twice"])
def test_duplicate(script: str, seen: set, expected: list[str], marks: list) -> None:
    result = run(compile_script(script), MESSAGES["plain"], ENV, duplicate_seen=lambda h, i: (h, i) in seen)
    assert result.describe() == expected
    assert [(m.handle, m.id, m.seconds, m.last) for m in result.duplicates] == marks


# --- editheader (RFC 5293), enotify with mailto (RFC 5435, RFC 5436), spamtest (RFC 5235) ---

E = 'require ["editheader", "fileinto", "variables", "index", "relational"];\n'
N = 'require ["enotify", "variables", "fileinto"];\n'
S = 'require ["spamtest", "relational", "comparator-i;ascii-numeric", "fileinto"];\n'
SP = 'require ["spamtestplus", "relational", "comparator-i;ascii-numeric", "fileinto"];\n'
GE = ':value "ge" :comparator "i;ascii-numeric"'

SPAM = (b"From: bulk@spam.test\r\nTo: alice@example.test\r\nSubject: cheap\r\n"
        b"X-Spam-Status: Yes, score=7.3 required=6.0 tests=BAYES_99,URIBL\r\nX-Spam-Score: 7.3\r\n\r\nbuy\r\n")
HAM = b"From: a@b.test\r\nSubject: hi\r\nX-Spam-Status: No, score=-0.5 required=5.0 tests=none\r\n\r\nx\r\n"
SCORE_ONLY = b"From: a@b.test\r\nSubject: hi\r\nX-Spam-Score: 12.5\r\n\r\nx\r\n"
UNTESTED = b"From: a@b.test\r\nSubject: hi\r\n\r\nx\r\n"
EXTRA = {"spam": SPAM, "ham": HAM, "score-only": SCORE_ONLY, "untested": UNTESTED, "forged": SPAM}
# spamtest reads this server's verdict (the Envelope's), never the X-Spam-* fields:
# "forged" carries the same fields as "spam" but no verdict, so it is untested
VERDICTS = {"spam": SpamVerdict(7.3, 6.0, True), "ham": SpamVerdict(-0.5, 5.0, False),
            "score-only": SpamVerdict(12.5)}

EXT_CASES: list[tuple[str, str, str, list[str]]] = [
    # RFC 5293 4/5: later tests see the edit
    ("addheader-seen", E + 'addheader "X-Sieve" "yes"; if header :is "x-sieve" "yes" { fileinto "a"; }', "plain",
     ["fileinto 'a'"]),
    ("addheader-first", E + 'addheader "X-One" "1"; if header :index 1 :is "x-one" "1" { fileinto "a"; }', "plain",
     ["fileinto 'a'"]),
    ("addheader-last-index", E + 'addheader :last "To" "z@example.test";'
     ' if address :index 1 :last :is "to" "z@example.test" { fileinto "a"; }', "plain", ["fileinto 'a'"]),
    ("deleteheader-all", E + 'deleteheader "subject"; if not exists "subject" { fileinto "a"; }', "plain",
     ["fileinto 'a'"]),
    ("deleteheader-value", E + 'deleteheader :contains "x-spam-score" "1";'
     ' if exists "x-spam-score" { fileinto "kept"; }', "plain", ["keep"]),
    ("deleteheader-value-nomatch", E + 'deleteheader :is "x-spam-score" "99";'
     ' if exists "x-spam-score" { fileinto "kept"; }', "plain", ["fileinto 'kept'"]),
    ("deleteheader-index", E + 'addheader "X-N" "1"; addheader :last "X-N" "2"; deleteheader :index 1 :last "X-N";'
     ' if header :count "eq" "x-n" "1" { if header :is "x-n" "1" { fileinto "first-left"; } }', "plain",
     ["fileinto 'first-left'"]),
    ("deleteheader-matches", E + 'deleteheader :matches "to" "*alice*"; if exists "to" { fileinto "a"; }', "plain",
     ["keep"]),
    ("deleteheader-missing", E + 'deleteheader "x-none"; keep;', "plain", ["keep"]),
    ("addheader-variable", E + 'set "v" "from-var"; addheader "X-V" "${v}";'
     ' if header :is "x-v" "from-var" { fileinto "a"; }', "plain", ["fileinto 'a'"]),
    ("addheader-encoded", E + 'addheader "X-U" "Grüße"; if header :is "x-u" "Grüße" { fileinto "a"; }', "plain",
     ["fileinto 'a'"]),
    # RFC 5435 / 5436
    ("notify", N + 'notify "mailto:bob@example.test";', "plain",
     ["notify 'mailto:bob@example.test' importance=2", "keep"]),
    ("notify-tags", N + 'notify :from "me@example.test" :importance "3" :message "hi" "mailto:b@example.test";',
     "plain", ["notify 'mailto:b@example.test' importance=3 from='me@example.test' message='hi'", "keep"]),
    ("notify-once", N + 'notify "mailto:b@example.test"; notify "mailto:b@example.test";', "plain",
     ["notify 'mailto:b@example.test' importance=2", "keep"]),
    ("notify-limit", N + 'notify "mailto:a@x.test"; notify "mailto:b@x.test"; notify "mailto:c@x.test";'
     ' notify "mailto:d@x.test";', "plain",
     ["notify 'mailto:a@x.test' importance=2", "notify 'mailto:b@x.test' importance=2",
      "notify 'mailto:c@x.test' importance=2", "keep"]),
    ("notify-variables", N + 'if header :matches "subject" "*" { notify :message "${1}" "mailto:b@x.test"; }',
     "plain", ["notify 'mailto:b@x.test' importance=2 message='Quarterly Report'", "keep"]),
    ("valid-method", N + 'if valid_notify_method ["mailto:a@b.test", "mailto:c@d.test?subject=x"]'
     ' { fileinto "a"; }', "plain", ["fileinto 'a'"]),
    ("invalid-method", N + 'if valid_notify_method "xmpp:a@b.test" { fileinto "a"; }', "plain", ["keep"]),
    ("invalid-mailto", N + 'if valid_notify_method "mailto:" { fileinto "a"; }', "plain", ["keep"]),
    ("capability-online", N + 'if notify_method_capability "mailto:a@b.test" "Online" "maybe"'
     ' { fileinto "a"; }', "plain", ["fileinto 'a'"]),
    ("capability-other", N + 'if notify_method_capability "mailto:a@b.test" "other" "maybe"'
     ' { fileinto "a"; }', "plain", ["keep"]),
    ("encodeurl", N + 'set :encodeurl "s" "a b&c/ü"; fileinto "${s}";', "plain",
     ["fileinto 'a%20b%26c%2F%C3%BC'"]),
    # RFC 5235: 0 untested, 1..10; :percent 0..100 (the mapping: sieve/spamtest.py spam_levels)
    ("spamtest-spam", S + f'if spamtest {GE} "6" {{ fileinto "Junk"; }}', "spam", ["fileinto 'Junk'"]),
    ("spamtest-value", S + 'if spamtest :is "7" { fileinto "seven"; }', "spam", ["fileinto 'seven'"]),
    ("spamtest-ham", S + f'if spamtest {GE} "6" {{ fileinto "Junk"; }}', "ham", ["keep"]),
    ("spamtest-ham-is-1", S + 'if spamtest :is "1" { fileinto "clean"; }', "ham", ["fileinto 'clean'"]),
    ("spamtest-untested", S + 'if spamtest :is "0" { fileinto "untested"; }', "untested", ["fileinto 'untested'"]),
    ("spamtest-score-only", S + 'if spamtest :is "10" { fileinto "ten"; }', "score-only", ["fileinto 'ten'"]),
    ("spamtest-count", S + 'if spamtest :count "eq" :comparator "i;ascii-numeric" "1" { fileinto "one"; }',
     "ham", ["fileinto 'one'"]),
    ("spamtestplus-percent", SP + f'if spamtest :percent {GE} "60" {{ fileinto "Junk"; }}', "spam",
     ["fileinto 'Junk'"]),
    ("spamtestplus-percent-is", SP + 'if spamtest :percent :is "61" { fileinto "61"; }', "spam", ["fileinto '61'"]),
    ("spamtestplus-untested", SP + 'if spamtest :percent :is "0" { fileinto "zero"; }', "untested",
     ["fileinto 'zero'"]),
    ("spamtestplus-plain", SP + 'if spamtest :is "7" { fileinto "seven"; }', "spam", ["fileinto 'seven'"]),
    ("spamtest-forged-header", S + 'if spamtest :is "0" { fileinto "untested"; }', "forged",
     ["fileinto 'untested'"]),
    ("spamtestplus-forged-header", SP + 'if spamtest :percent :is "0" { fileinto "zero"; }', "forged",
     ["fileinto 'zero'"]),
]


@pytest.mark.parametrize(("script", "msg", "expected"), [c[1:] for c in EXT_CASES], ids=[c[0] for c in EXT_CASES])
def test_extensions(script: str, msg: str, expected: list[str]) -> None:
    raw = EXTRA.get(msg) or MESSAGES[msg]
    env = Envelope(ENV.from_, ENV.to, VERDICTS.get(msg))
    assert run(compile_script(script), raw, env).describe() == expected


def test_editheader_result_is_the_edited_message() -> None:
    result = run(compile_script(E + 'deleteheader "cc"; addheader :last "X-Last" "end";'), MESSAGES["plain"], ENV)
    assert result.message is not None
    head = result.message.split(b"\r\n\r\n", 1)[0]
    assert b"Cc:" not in head and head.endswith(b"\r\nX-Last: end")
    assert run(compile_script(E + "keep;"), MESSAGES["plain"], ENV).message is None


@pytest.mark.parametrize(("script", "error"), [
    ('require "editheader"; deleteheader "Received";', "may not change the Received field"),
    ('require "editheader"; addheader "Auto-Submitted" "no";', "may not change"),
    ('require "editheader"; addheader "Bad Name" "x";', "bad header field name"),
    ('require "editheader"; addheader :index 1 "X" "x";', "takes no tag :index"),
    ('addheader "X" "y";', 'needs require "editheader"'),
    ('require "enotify"; notify "xmpp:a@b.test";', "mailto only"),
    ('require "enotify"; notify :importance "0" "mailto:a@b.test";', ":importance must be"),
    ('require "spamtest"; if spamtest :percent "1" { keep; }', 'needs require "spamtestplus"'),
    ('if spamtest "1" { keep; }', 'needs require "spamtest"'),
])
def test_extension_errors(script: str, error: str) -> None:
    from mailyard.sieve import SieveError

    with pytest.raises(SieveError, match=error):
        compile_script(script)


@pytest.mark.parametrize(("status", "score", "levels"), [
    (None, None, (0, 0)),
    ("No, score=0.0 required=5.0", None, (1, 0)),
    ("No, score=4.9 required=5.0", None, (5, 49)),
    ("Yes, score=5.0 required=5.0", None, (6, 50)),
    ("Yes, score=10.0 required=5.0", None, (10, 100)),
    ("Yes, score=50 required=5.0", None, (10, 100)),
    ("Yes, score=4.0 required=5.0", None, (6, 40)),  # the verdict wins for spamtest's 6
    (None, "7.5", (8, 75)),  # the default threshold, 5.0
    ("garbage", None, (0, 0)),
])
def test_spam_levels_mapping(status, score, levels) -> None:
    from mailyard.sieve import spam_levels, verdict_from_header

    assert spam_levels(status, score) == levels
    verdict = verdict_from_header(status, score)  # the same mapping through a SpamVerdict
    assert (verdict.levels() if verdict is not None else (0, 0)) == levels


def test_runtime_editheader_protected_through_variables() -> None:
    from mailyard.sieve import SieveRuntimeError

    with pytest.raises(SieveRuntimeError, match="may not be changed"):
        run(compile_script(E + 'set "f" "received"; deleteheader "${f}";'), MESSAGES["plain"], ENV)
    with pytest.raises(SieveRuntimeError, match="bad address"):
        run(compile_script(N + 'set "m" "mailto:nobody"; notify "${m}";'), MESSAGES["plain"], ENV)
