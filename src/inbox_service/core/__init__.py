"""Cross-cutting code shared by every domain. Imports nothing from the domains."""
