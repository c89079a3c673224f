"""Payment reminders (use case 2): the escalation ladder, payments, and what is owed on a run.

A reminder document is registered once (from a manifest) and stays ``open`` until paid. Each run places every open
document on the ladder by its ``DueDate`` and the run's ``as_of``; a (document, stage) is decided once, ever: sent,
deferred to the end of quiet hours, capped or skipped. All reads and writes are bulk; customers are paged so one
customer's documents are always decided together (the frequency cap ranks them).
"""
