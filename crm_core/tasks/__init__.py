"""Tasks, reminders, bulk tasks and the daily plan."""
