"""Lifecycle tracking (use case 8): fold engagement events into each document's furthest step, never backwards.

sent → delivered → opened → document_accessed → acknowledged / action_completed. ``sent`` comes from the ledger
(a push was accepted for the document); the rest from engagement events. Status changes go back to Exstream once;
documents pushed but not opened in time get one fallback request.
"""
