"""Scripts written against the published SDK's API, run unchanged but for their imports."""
