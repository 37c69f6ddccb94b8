"""Process plumbing: environment variables, subprocess environments and loopback servers."""
