"""Conversations with clients over the messaging channels, and their messages."""
