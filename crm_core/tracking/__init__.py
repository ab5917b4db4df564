"""Call tracking: sites, tracking numbers and pools, visitors, sessions and attribution."""
