"""Call tracking and routing: number pools and leases, visitor sources, region distribution."""
