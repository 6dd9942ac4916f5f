"""The domain: everything that outlives a page lives here."""
