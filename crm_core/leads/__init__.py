"""The lead funnel with its gate, and conversion into contact, company and deal."""
