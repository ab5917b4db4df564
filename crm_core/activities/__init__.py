"""The client timeline: calls, meetings, e-mails, messages, notes."""
