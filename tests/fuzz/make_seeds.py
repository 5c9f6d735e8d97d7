"""Write the hand-made seed inputs into tests/fuzz/corpus/<target>/seed-*.

Run once when seeds change: ``python tests/fuzz/make_seeds.py``. The files are
committed; the fuzzers add their own finds next to them (``make fuzz`` keeps
only new inputs that add coverage, merged into the same folder).

Each protocol seed starts with the two header bytes harness.py reads (start
state selector, RNG seed); b"\\x00\\x00" = no preamble, whole-chunk delivery
and mostly positive fake answers. Message seeds are plain messages.
"""

from __future__ import annotations

import pathlib

HERE = pathlib.Path(__file__).parent
UNIT_DATA = HERE.parent / "unit" / "data" / "message"


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


SMTP = {
    # RFC 5321 D.1, a typical SMTP transaction scenario
    "rfc5321-d1": crlf(
        "EHLO bar.com\nMAIL FROM:<Smith@bar.com>\nRCPT TO:<Jones@foo.com>\nRCPT TO:<Green@foo.com>\n"
        "RCPT TO:<Brown@foo.com>\nDATA\nBlah blah blah...\n...etc. etc. etc.\n.\nQUIT\n"
    ),
    # RFC 5321 D.3 relayed mail, RFC 3461 DSN, RFC 1870 SIZE, RFC 6531 SMTPUTF8
    "esmtp-params": crlf(
        "EHLO c.example\nMAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=QQ314159\n"
        "RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d.example\n"
        "RCPT TO:<@hosta.example,@hostb.example:user@hostc.example>\nRCPT TO:<\"q uo\\\"ted\"@x.example>\n"
        "RCPT TO:<j\u00f6rg@\u00e9xample.test> NOTIFY=NEVER\nDATA\nSubject: x\n\n..dot\n.\nRSET\n"
        "MAIL FROM:<> SMTPUTF8\nRCPT TO:<postmaster>\nDATA\n.\nQUIT\n"
    ),
    "auth-plain": crlf("EHLO c.example\nAUTH PLAIN AHVzZXIAcGFzcw==\nAUTH LOGIN\ndXNlcg==\ncGFzcw==\n*\nQUIT\n"),
    "starttls-injection": b"EHLO c.example\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\nEHLO c.example\r\n",
    "misc-commands": crlf(
        "HELP\nHELP MAIL\nVRFY postmaster\nEXPN staff\nNOOP hello\nBDAT 10 LAST\nTURN\nXYZZY\n"
        "MAIL FROM:<a@b>\nHELO\nEHLO\nDATA\nRCPT TO:<x@y>\nQUIT\n"
    ),
    "smuggling": b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\n.\r\nMAIL FROM:<e@f>\r\n\r\n.\r\n",
    "bare-lf": b"EHLO c\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\nDATA\nbody\n.\n\r\n.\r\nQUIT\n",
    "long-line": b"EHLO " + b"x" * 600 + b"\r\nNOOP\r\nMAIL FROM:<" + b"a" * 300 + b"@b>\r\n",
    "binary": b"\x00\xff\r\n\xfe\xfd\r\nEHLO \xc3\xa9\r\n",
    # RFC 5321 4.1.3 address literals, 4.5.3.1 size limits
    "address-literals": crlf(
        "EHLO [192.0.2.1]\nMAIL FROM:<a@[192.0.2.300]>\nMAIL FROM:<a@[IPv6:2001:db8::1]>\n"
        "RCPT TO:<b@[IPv6:::zz]>\nRCPT TO:<c@[x-tag:abc]>\nRCPT TO:<d@[1.2.3.4]>\n"
        f"RCPT TO:<e@{'d' * 63}.{'e' * 63}.{'f' * 63}.{'g' * 63}.example>\nRCPT TO:<{'l' * 65}@x.example>\n"
        "RCPT TO:<@a.example:f@g.example>\nRCPT TO:<\u00e9@x.example>\nQUIT\n"
    ),
}

POP3 = {
    # RFC 1939 section 10, the example POP3 session (APOP)
    "rfc1939-10": crlf("APOP mrose c4c9334bac560ecc979e58001b3e22fb\nSTAT\nLIST\nRETR 1\nDELE 1\nRETR 2\nDELE 2\nQUIT\n"),
    "user-pass": crlf(
        "CAPA\nUSER alice\nPASS secret\nSTAT\nLIST\nLIST 2\nUIDL\nUIDL 3\nTOP 1 0\nTOP 5 1\nRETR 3\n"
        "DELE 1\nDELE 1\nLIST 1\nRSET\nNOOP\nLIST 99\nRETR 0\nTOP 1 -1\nQUIT\n"
    ),
    "sasl": crlf("AUTH\nAUTH PLAIN\nAHVzZXIAc2VjcmV0\nAUTH PLAIN =\nAUTH LOGIN\n*\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\nSTAT\nQUIT\n"),
    "stls": b"STLS\r\nUSER a\r\nCAPA\r\nSTLS\r\nQUIT\r\n",
    "junk": b"\x00\r\nuser\r\nPASS x\r\nLIST\r\n" + b"A" * 300 + b"\r\nQUIT\r\n",
}

IMAP = {
    # RFC 9051 8, the sample IMAP4rev2 connection
    "rfc9051-8": crlf(
        "a001 login mrc secret\na002 select inbox\na003 fetch 12 full\n"
        "a004 fetch 12 body[header]\na005 store 12 +flags \\deleted\na006 logout\n"
    ),
    "rfc9051-7-6-literal": b"A001 LOGIN {11}\r\nFRED FOOBAR {7}\r\nfat man\r\nA044 BLURDYBLOOP {102856}\r\nA045 NOOP\r\n",
    "fetch-all": crlf(
        "a1 LOGIN alice secret\na2 SELECT INBOX\na3 FETCH 1:* (FLAGS UID ENVELOPE BODYSTRUCTURE BODY INTERNALDATE RFC822.SIZE)\n"
        "a4 FETCH 2 (BODY.PEEK[1] BODY[1.MIME] BODY[2]<0.3> BODY[3.HEADER] BODY[3.TEXT] BINARY[1] BINARY.SIZE[2])\n"
        "a5 UID FETCH 1:* (BODY[HEADER.FIELDS (From Subject)] BODY[HEADER.FIELDS.NOT (Date)] RFC822 RFC822.HEADER RFC822.TEXT)\n"
        "a6 FETCH 9 FLAGS\na7 FETCH $ FLAGS\na8 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\n"
    ),
    "search": crlf(
        "a1 LOGIN alice secret\na2 SELECT INBOX\na3 SEARCH SUBJECT IMAP FROM Terry NOT SEEN\n"
        "a4 UID SEARCH RETURN (MIN MAX COUNT SAVE) OR BODY joe HEADER Message-Id B27397 SINCE 1-Jan-2000\n"
        "a5 SEARCH CHARSET UTF-8 TEXT {4}\n\u00e4\u00f6\na6 SEARCH 1:2,* UID 3:7 LARGER 10 SMALLER 100000 SENTBEFORE 1-Feb-2030\n"
        "a7 SEARCH $ MODSEQ 1 KEYWORD $Junk (OR ANSWERED FLAGGED)\n"
    ),
    "sort-thread": crlf(
        "a1 LOGIN alice secret\na2 SELECT INBOX\na3 SORT (REVERSE DATE SUBJECT DISPLAYFROM) UTF-8 ALL\n"
        "a4 UID SORT RETURN (MIN MAX COUNT) (ARRIVAL CC SIZE TO) US-ASCII NOT SEEN\n"
        "a5 SORT RETURN (PARTIAL -1:-10 SAVE) (FROM) UTF-8 1:*\na6 THREAD REFERENCES UTF-8 ALL\n"
        "a7 UID THREAD ORDEREDSUBJECT UTF-8 SUBJECT x\na8 SEARCH RETURN (PARTIAL 1:5) ALL\n"
    ),
    "store-copy": crlf(
        "a1 LOGIN alice secret\na2 SELECT INBOX\na3 STORE 1:2 FLAGS.SILENT (\\Seen $x)\na4 UID STORE 7 -FLAGS (\\Seen)\n"
        "a5 COPY 1 Sent\na6 UID MOVE 3:8 Archive/2024\na7 EXPUNGE\na8 UID EXPUNGE 3\na9 CLOSE\na10 UNSELECT\n"
    ),
    "mailboxes": crlf(
        'a1 LOGIN alice secret\na2 LIST "" *\na3 LIST "Archive/" %\na4 LSUB "" "*"\n'
        'a5 LIST (SUBSCRIBED) "" ("INBOX" "Sent") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\n'
        "a6 CREATE &AOQA9gD8-\na7 CREATE foo (USE (\\Drafts))\na8 RENAME foo bar\na9 DELETE bar\n"
        "a10 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)\na11 SUBSCRIBE Sent\na12 NAMESPACE\n"
    ),
    "append": b"a1 LOGIN alice secret\r\na2 APPEND INBOX (\\Seen) \"01-Jan-2020 10:00:00 +0000\" {23}\r\n"
    b"Subject: x\r\n\r\nhello\r\n\r\na3 APPEND Sent {5+}\r\nhello ~{3}\r\nabc\r\n",
    "authenticate": b"a1 AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\na2 AUTHENTICATE PLAIN =\r\na3 AUTHENTICATE LOGIN\r\n*\r\n",
    "enable-idle": crlf(
        "a1 LOGIN alice secret\na2 ENABLE IMAP4rev2 UTF8=ACCEPT CONDSTORE\na3 ID (\"name\" \"x\")\n"
        "a4 SELECT INBOX (QRESYNC (1 1 1:9))\na5 IDLE\nDONE\na6 IDLE\nnope\na7 CHECK\na8 LOGOUT\n"
    ),
    "garbage": b"*\r\n+ x\r\na1\r\na1 \r\n(\r\n{5}\r\na1 FETCH (\r\na1 LOGIN \"unterminated\r\n\x00\xff\r\n",
    # RFC 9208 QUOTA, RFC 8514 SAVEDATE, RFC 7889 / 9208 STATUS items
    "quota-savedate": crlf(
        'a1 LOGIN alice secret\na2 GETQUOTAROOT INBOX\na3 GETQUOTA ""\na4 SETQUOTA "" (STORAGE 512 MESSAGE 9)\n'
        'a5 SETQUOTA "" ()\na6 STATUS INBOX (DELETED DELETED-STORAGE SIZE APPENDLIMIT)\na7 SELECT INBOX\n'
        "a8 FETCH 1:* (SAVEDATE INTERNALDATE)\na9 SEARCH SAVEDSINCE 1-Jan-2020 SAVEDATESUPPORTED NOT SAVEDON 2-Feb-2021\n"
        "a10 UID SEARCH SAVEDBEFORE 1-Jan-2030\na11 COPY 1 Sent\n"
    ),
}


def message_seeds() -> dict[str, bytes]:
    seeds = {p.stem: p.read_bytes().replace(b"\n", b"\r\n") for p in sorted(UNIT_DATA.glob("*.eml"))}
    seeds["nested-mime"] = crlf(
        'From: a@b.c\nSubject: =?iso-8859-1?q?caf=E9?=\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="outer"\n\n'
        "preamble\n--outer\nContent-Type: multipart/alternative; boundary=inner\n\n--inner\nContent-Type: text/plain\n\n"
        "plain\n--inner\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\nPHA+aGk8L3A+\n--inner--\n"
        "--outer\nContent-Type: message/rfc822\n\nFrom: x@y\nTo: group: a@b, c@d;\nContent-Type: multipart/digest; boundary=d\n\n"
        "--d\n\nSubject: digest part\n\nbody\n--d--\n--outer\nContent-Type: application/pdf; name*=utf-8''%E2%82%AC.pdf\n"
        "Content-Disposition: attachment; filename*0=a; filename*1=b.pdf\nContent-Language: en, de\n"
        "Content-Location: http://x/y\nContent-ID: <p@x>\n\nJVBERi0=\n--outer--\nepilogue\n"
    )
    seeds["broken-mime"] = crlf(
        "Content-Type: multipart/mixed; boundary=\"\"\nContent-Transfer-Encoding: base64\n\n--\n--b--\n"
        "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
    )
    seeds["no-boundary"] = crlf("Content-Type: multipart/mixed\n\n--x\n\nbody\n--x--\n")
    seeds["headers-only"] = b"From: \"\\\"q\" <@r:u@[1.2.3.4]>, g: x@y;\r\nDate: 1 Jan 70 00:00 +9999\r\n"
    seeds["8bit-headers"] = b"From: \xc3\xa9l\xc3\xa8ve <e@x.fr>\r\nSubject: \xff\xfe\r\nTo: <\xe4@b>\r\n\r\nbody\r\n"
    return seeds


def write() -> None:
    corpus = HERE / "corpus"
    for target, seeds in (("smtp", SMTP), ("pop3", POP3), ("imap", IMAP), ("message", message_seeds())):
        folder = corpus / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            head = b"" if target == "message" else b"\x00\x00"
            (folder / f"seed-{name}").write_bytes(head + data)
            if target != "message":
                # the same session with another RNG seed: other
                # chunks and different fake answers
                (folder / f"seed-{name}-split").write_bytes(b"\x00\x07" + data)


if __name__ == "__main__":
    write()
