"""Follow-ups: notify once, remind at offsets until an event closes the document, then hand it back to Exstream.

Policy change alerts (use case 3) and customer action prompts (use case 5) are one pattern with other numbers, so
they share everything here and differ only in their ``FollowUpRules``:

- a document is in scope when its manifest carries a deadline (and, for policies, ``RequiresAcknowledgement=Y``);
  records that do not are kept in ``rejected_record`` with the reason, so every record is accounted for;
- the first run that sees an open document sends the ``notice``; later runs send the latest reminder whose moment
  has come (``reminder+3d`` counts from the notice, ``reminder-7d`` from the deadline) and none that a customer
  could no longer act on — each stage goes into the idempotency key, so each is sent once, ever; a reminder (not
  the notice, which tells of a change the customer has yet to hear of) passes the use case's frequency cap and
  quiet hours, when its configuration sets them;
- the closing engagement event (``acknowledged``, ``action_completed``) ends the document's follow-up; anything
  still unsent for it is marked ``skipped``/``closed``;
- at the hand-back moment the document is posted to an Exstream batch-input channel (a formal letter, a printed
  reminder) once, recorded as a notification of its own stage so it is claimed before posting like a push;
- an action past its deadline expires and nothing more is sent.

Every decision is taken against the run's ``as_of``; apart from its default (now), the wall clock is read only for
the ledger's bookkeeping columns (``created_at``, ``updated_at``).
"""
