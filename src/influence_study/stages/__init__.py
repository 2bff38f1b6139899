"""The functions the workflow's rules call: the only code that reads the config."""
