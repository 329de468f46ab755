"""The simulator: the core on virtual time (`stormproof simulate`)."""
