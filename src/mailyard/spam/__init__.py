"""The spam verdict of mail received on the MX port: reputation signals of
the sending host (``signals.py``), the built-in score (``score.py``),
rspamd's content scan (``rspamd.py``), the X-Spam-* fields (``headers.py``),
each recipient's filing (``filing.py``) and all of it together, logged and
recorded (``checker.py``)."""
