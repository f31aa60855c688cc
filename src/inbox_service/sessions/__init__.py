"""Browser session tokens: short-lived bearer credentials minted for an agent by a backend."""
