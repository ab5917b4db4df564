"""Notifications: what a user is told (a reminder, an assigned task or lead), stored until read."""
