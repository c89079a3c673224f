"""Delivery exceptions (use case 4): documents Exstream failed to deliver, the rule table that says what to do
about each, and the operator's actions on them (list, reissue).

Three sources feed one ``delivery_exception`` table: jobs in status ``error``, ERROR/SEVERE lines of a job's message
file, and tracking events whose ``schemaType`` ends in ``-Failed`` or is ``Exstream-Email-NDLV``. A failed document
is recorded once whichever sources report it: its key is (job, channel, document), or the event id when the event
names no document. Tracking events carry personal data in ``user{}``: only the document id, a masked customer
reference and a vetted document type are kept.

``config`` holds the rule table, ``rules`` the pure decisions on events, message lines and records, ``tasks`` the
thin Prefect tasks, ``cursor`` how far the poll for failed jobs has read, ``commands`` the operator's commands;
every statement is ``ledger.exceptions``'s.
"""
