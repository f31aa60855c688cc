"""Browser session tokens: short-lived bearer credentials a frontend's backend mints for an agent."""
