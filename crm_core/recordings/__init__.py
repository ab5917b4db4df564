"""Call recordings: metadata, access rules, retention."""
