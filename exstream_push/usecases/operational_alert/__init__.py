"""Operational alerts (use case 7): who an alert reaches, the formal follow-up asked of Exstream, and one report
of both.

An alert's audience is its own ``customer_ids`` or a named segment of ``config/ops-alert-segments.yaml``. Each
affected customer becomes one document-like row (``document_id`` ``alert:<alert_id>/<customer_id>``, ``job_id`` the
alert id), so the statement-ready tasks segment, render and send it, and every customer — even one without a
device — has its own notification outcome. The push and the follow-up letter share the alert id as ``job_id``
(notifications, post-back), which is how ``alert_report`` puts the two side by side.
"""
