"""Built-in backends; each module is a plugin listed in iq1q.plugins.DEFAULT_PLUGINS (not named "backends": iq1q.backends() is the API)."""
