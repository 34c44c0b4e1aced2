"""The config file: TOML text to a validated Config; errors name file, job and key."""
