"""Durable scheduled work (reminders, robot steps), claimed once across instances."""
