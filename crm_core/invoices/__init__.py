"""Invoices and their payment-due reminders."""
