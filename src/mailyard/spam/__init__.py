"""Spam and abuse defences, sans I/O: decisions over values the glue passes in.

rates.py counts connections and messages per client address and network in
sliding windows; greylist.py decides on a greylisting triplet from its stored
state; limits.py counts what an account submits; learning.py builds and reads
the rspamd controller's learn requests. Nothing here opens a socket or a file: net/, delivery/ and the server hand in the facts and carry out
the verdict.
"""
