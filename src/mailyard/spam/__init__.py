"""Spam and abuse defences.

The spam verdict of mail received on the MX port: reputation signals of the
sending host (``signals.py``, DNS through mailauth's cached resolver), the
built-in score (``score.py``), rspamd's content scan (``rspamd.py``), the
X-Spam-* fields (``headers.py``), each recipient's filing (``filing.py``) and
all of it together, logged and recorded (``checker.py``).

Abuse decisions over values the glue passes in: ``rates.py`` counts
connections and messages per client address and network in sliding
windows; ``greylist.py`` decides on a greylisting triplet from its stored
state; ``limits.py`` counts what an account submits; ``learning.py`` builds
and reads the rspamd controller's learn requests. net/, delivery/ and the
server hand in the facts and carry out the verdicts.
"""
